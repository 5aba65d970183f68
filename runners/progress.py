"""What a run shows while it trains, on stderr: tqdm's bar on a terminal, log lines off one.

Off a terminal (SLURM output files, CI logs) a bar would only write `\\r` redraws, so the run
prints plain lines instead, each prefixed with the run's name so runs sharing a log file can be
told apart:

    nano-adamw-lr0.001-s0-1a2b3c4d: step 20/30 | train 2.7312 | val 2.7440 | 23,000 tok/s | elapsed 0:00:04 | remaining 0:00:02

A line is printed for every row with a val loss (evaluations), for the last step, and otherwise
at most once every `every_s` seconds, so `train.log_every=1` does not flood the file.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """`update(row)` after each logged metric row, `close()` at the end; `enabled=False`
    (`train.progress: false`, every rank but 0) shows nothing."""

    def __init__(self, enabled: bool, name: str, total: int, initial: int, *,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 every_s: float = 10.0):
        self.stream = sys.stderr if stream is None else stream
        self.name, self.total, self.initial = name, total, initial
        self.clock, self.every_s = clock, every_s
        self.start = self.last_line = clock()
        self.bar = None
        self.lines = enabled and not _isatty(self.stream)
        if enabled and not self.lines:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=name, unit="step", file=self.stream,
                            mininterval=0.5, dynamic_ncols=True, leave=False)

    def update(self, row: dict) -> None:
        step = row["step"]
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{row['train_loss']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}",
                                 refresh=False)
        elif self.lines:
            now = self.clock()
            if "val_loss" in row or step >= self.total or now - self.last_line >= self.every_s:
                self.last_line = now
                print(self.line(row, now), file=self.stream, flush=True)

    def line(self, row: dict, now: float) -> str:
        step, elapsed = row["step"], now - self.start
        # Mean time per step of this process only: a resumed run's earlier steps ran elsewhere.
        per_step = elapsed / max(step - self.initial, 1)
        parts = [f"{self.name}: step {step}/{self.total}", f"train {row['train_loss']:.4f}"]
        if row.get("val_loss") is not None:
            parts.append(f"val {row['val_loss']:.4f}")
        parts += [f"{row['tokens_per_s']:,.0f} tok/s", f"elapsed {_hms(elapsed)}",
                  f"remaining {_hms(per_step * (self.total - step))}"]
        return " | ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
