"""Launchers: where the runs of a suite execute.

Each launcher module has `launch(runs, launcher_cfg)`, which takes resolved run configs (already
checked, finished ones already dropped) and returns when every run has ended or, for a launcher
that only submits, when every run is queued.
"""

from __future__ import annotations

import importlib

LAUNCHERS = ("local", "torchrun", "slurm")


class LaunchFailed(RuntimeError):
    """Some runs did not finish; the message names each, with where to look."""


def launch(runs: list[dict], launcher_cfg: dict) -> None:
    name = launcher_cfg.get("name")
    if name not in LAUNCHERS:
        raise ValueError(f"launcher.name={name!r}: choose one of {', '.join(LAUNCHERS)}")
    importlib.import_module(f"runners.launch.{name}").launch(runs, launcher_cfg)
