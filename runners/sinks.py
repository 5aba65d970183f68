"""Where a run's metric rows go: its metrics.jsonl always, and wandb when asked for.

wandb is optional and never needed to read results back: the analysis reads the run folder.
It runs offline unless the config says `train.wandb=online`, grouped by suite and optimizer.
"""

from __future__ import annotations

from runners.run_folder import RunFolder


class MetricSinks:
    """Rank 0's: the only process that writes the run folder."""

    def __init__(self, cfg: dict, folder: RunFolder):
        self.folder = folder
        self.wandb_run = None
        mode = cfg["train"].get("wandb", "disabled")
        if mode != "disabled":
            import wandb

            self.wandb_run = wandb.init(
                project="optarena", group=f"{cfg['suite']}/{cfg['optimizer']['name']}",
                name=folder.path.name, id=folder.path.name, resume="allow", config=cfg,
                mode=mode, dir=str(folder.path),
            )

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
