"""One node, N processes per run through torchrun: DDP by default, FSDP2 with train.parallel=fsdp.

Each run is its own torchrun job, one after another; the resolved config travels as a JSON file.
This process holds each run's lock while its torchrun job runs (the ranks know from their
environment), skips a run another process holds, and goes on when a run fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from runners import lock
from runners.config import run_id
from runners.launch import settle
from runners.suite import run_folder


def command(cfg_path: str, launcher_cfg: dict) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={launcher_cfg.get('nproc_per_node', 2)}",
            "-m", "runners.train", "--config", cfg_path]


def launch(runs: list[dict], launcher_cfg: dict) -> None:
    ended = {}
    for i, cfg in enumerate(runs, 1):
        name, path = run_id(cfg), run_folder(cfg).path
        print(f"[{i}/{len(runs)}] {name} on {launcher_cfg.get('nproc_per_node', 2)} processes", flush=True)
        try:
            with lock.hold(path), tempfile.NamedTemporaryFile("w", suffix=".json") as f:
                json.dump(cfg, f)
                f.flush()
                done = subprocess.run(command(f.name, launcher_cfg),
                                      env={**os.environ, **lock.held_for_children(path)})
            ended[name] = (RuntimeError(f"exited with status {done.returncode} under torchrun")
                           if done.returncode else None)
        except lock.RunLocked as e:
            print(f"skipped: {e}", flush=True)
            ended[name] = e
    settle(ended)
