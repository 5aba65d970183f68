"""Runs one after another in this process."""

from __future__ import annotations

from runners.config import run_id


def launch(runs: list[dict], launcher_cfg: dict) -> None:
    from runners.train import run

    for i, cfg in enumerate(runs, 1):
        print(f"[{i}/{len(runs)}] {run_id(cfg)}", flush=True)
        run(cfg)
