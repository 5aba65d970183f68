"""What the optimizers here share: torch.optim's step protocol and access to DTensor shards."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of t (t itself unless it is a DTensor); in-place ops on it update t."""
    return t.to_local() if isinstance(t, DTensor) else t


def all_reduce_batched_(pairs, op=dist.ReduceOp.SUM) -> None:
    """All-reduce in place each tensor of `pairs` (tensor, process group) over its group, with
    one collective per group: a group's tensors travel flattened into one buffer."""
    by_group: dict = {}
    for t, group in pairs:
        by_group.setdefault(group, []).append(t)
    for group, members in by_group.items():
        flat = torch.cat([m.reshape(-1) for m in members])
        dist.all_reduce(flat, op=op, group=group)
        for m, chunk in zip(members, flat.split([m.numel() for m in members])):
            m.copy_(chunk.view_as(m))


def group_lr(group: dict) -> float:
    """The group's lr as a Python number, read at every step: torch.optim lets lr be a
    one-element tensor, which a scheduler fills in place. The step's arithmetic takes it as a
    number, so that a tensor lr computes exactly what the same float does (a GPU tensor costs a
    host sync per group)."""
    return float(group["lr"])


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
