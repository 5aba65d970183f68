"""One node, N processes per run through torchrun: DDP by default, FSDP2 with train.parallel=fsdp.

Each run is its own torchrun job, one after another; the resolved config travels as a JSON file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

from runners.config import run_id
from runners.launch import LaunchFailed


def command(cfg_path: str, launcher_cfg: dict) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={launcher_cfg.get('nproc_per_node', 2)}",
            "-m", "runners.train", "--config", cfg_path]


def launch(runs: list[dict], launcher_cfg: dict) -> None:
    for i, cfg in enumerate(runs, 1):
        print(f"[{i}/{len(runs)}] {run_id(cfg)} on {launcher_cfg.get('nproc_per_node', 2)} processes",
              flush=True)
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump(cfg, f)
            f.flush()
            done = subprocess.run(command(f.name, launcher_cfg))
        if done.returncode:
            raise LaunchFailed(f"run {run_id(cfg)} exited with status {done.returncode} under torchrun")
