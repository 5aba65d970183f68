"""Where a run's metric rows go: its metrics.jsonl always, and wandb when asked for.

wandb is optional and never needed to read results back: the analysis reads the run folder.
`train.wandb` sets the mode (disabled by default), project, entity, group and tags; a key left
null (tags: empty) falls back to the WANDB_* variable wandb itself reads, then to our default.
"""

from __future__ import annotations

import hashlib
import os
import re

from runners.run_folder import RunFolder


def wandb_run_id(suite: str, run_id: str) -> str:
    """The wandb id of (suite, run_id): the same on every resume, different across suites.

    wandb ids must avoid `/ \\ # ? % : ; , '` and stay short (64 characters here): the run_id,
    cut and cleaned, plus 8 hex digits of a hash of the pair."""
    digest = hashlib.sha256(f"{suite}\0{run_id}".encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', run_id)[:55]}-{digest}"


def wandb_settings(cfg: dict, run_id: str, environ=os.environ) -> dict:
    """wandb.init's arguments for run `run_id` of `cfg` (bar `dir` and `config`), fallbacks applied.

    The WANDB_* variables are read here, for each run, and passed as arguments: wandb 0.31 reads
    them once per process, at its first wandb.init, and ignores later changes (a suite or a test
    runs many runs in one process). Explicit wandb.init arguments win over the variables in
    wandb too, so a value set in the config always wins."""
    w, suite = cfg["train"]["wandb"], cfg["suite"]
    tags = w.get("tags") or [t.strip() for t in environ.get("WANDB_TAGS", "").split(",") if t.strip()]
    return {
        "mode": w.get("mode") or environ.get("WANDB_MODE") or "disabled",
        "project": w.get("project") or environ.get("WANDB_PROJECT") or "optarena",
        "entity": w.get("entity") or environ.get("WANDB_ENTITY") or None,  # None: your default entity
        "group": w.get("group") or environ.get("WANDB_RUN_GROUP") or f"{suite}/{cfg['optimizer']['name']}",
        "tags": list(tags) or None,
        "id": wandb_run_id(suite, run_id), "name": f"{suite}/{run_id}", "resume": "allow",
    }


class MetricSinks:
    """Rank 0's: the only process that writes the run folder."""

    def __init__(self, cfg: dict, folder: RunFolder):
        self.folder = folder
        self.wandb_run = None
        settings = wandb_settings(cfg, folder.path.name)
        if settings["mode"] != "disabled":
            import wandb

            self.wandb_run = wandb.init(**settings, config=cfg, dir=str(folder.path))

    def write_info(self, info: dict) -> None:
        self.folder.write_info(info)

    def log(self, row: dict) -> None:
        self.folder.append_metrics(row)
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def summary(self, summary: dict) -> None:
        if self.wandb_run is not None:
            self.wandb_run.summary.update({k: v for k, v in summary.items() if v is not None})

    def close(self) -> None:
        self.folder.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


class NullSinks:
    """Every other rank's: they compute the same rows and write nothing."""

    def write_info(self, info: dict) -> None: ...
    def log(self, row: dict) -> None: ...
    def summary(self, summary: dict) -> None: ...
    def close(self) -> None: ...
