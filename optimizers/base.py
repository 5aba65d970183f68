"""What the optimizers here share: torch.optim's step protocol and access to DTensor shards."""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of t (t itself unless it is a DTensor); in-place ops on it update t."""
    return t.to_local() if isinstance(t, DTensor) else t


class GroupwiseOptimizer(torch.optim.Optimizer):
    """torch.optim's `step(closure)`; a subclass updates one parameter group at a time."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict) -> None:
        raise NotImplementedError
