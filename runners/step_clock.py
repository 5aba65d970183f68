"""Per-step times of the training loop, without making the loop wait for the device.

A step has three marks: its start (before the batch is fetched), the end of forward+backward
(gradients clipped) and its end (optimizer step and zero_grad done). On the CPU a mark is the
host clock. On CUDA it is an event recorded in the current stream, so the host never waits for
the device: a step's time is the device's time from its first mark to its last, which is when
the device runs the step's kernels or, where the host launches them more slowly than they run,
waits for them (a launch-bound step is slow, and shows so). The host may run steps ahead of the
device; the events still date each step where the device did it. They are read at the loop's
read points (`read`), which wait for the last one: the loop syncs there anyway (the loss is read
back, or a checkpoint is written).
"""

from __future__ import annotations

import time

import torch


class StepClock:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._marks: list[tuple] = []  # (start, fwd_bwd_done, done) of each step since `read`
        self._open: list = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._open.append(event)
        else:
            self._open.append(time.perf_counter())
        if len(self._open) == 3:
            self._marks.append(tuple(self._open))
            self._open = []

    def read(self) -> list[tuple[float, float]]:
        """(forward+backward seconds, optimizer seconds) of each step since the last read."""
        marks, self._marks = self._marks, []
        if self.cuda and marks:
            marks[-1][2].synchronize()
            return [(t0.elapsed_time(t1) / 1e3, t1.elapsed_time(t2) / 1e3) for t0, t1, t2 in marks]
        return [(t1 - t0, t2 - t1) for t0, t1, t2 in marks]
