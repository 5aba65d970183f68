"""What an optimizer class from another package needs to keep this harness's contract.

pytorch-optimizer's classes compute the step as written, but three torch.optim conventions need
help: step hooks run once per step; a one-element tensor lr (their arithmetic takes a number:
`add_(..., alpha=lr)` refuses a tensor, and tensor arithmetic would promote float32 updates
through the float64 lr); and copies (torch.optim.Optimizer's `__getstate__` keeps only defaults,
state and param_groups, so a deepcopy or pickle loses what their `__init__` set on the instance,
e.g. `maximize`).
"""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor

from .base import group_lr


class TorchOptimConventions:
    """Mix in before the external class: `class Lion(TorchOptimConventions, po.Lion)`."""

    def step(self, closure=None):
        # A tensor lr is read as a number for the step and put back, so that a scheduler
        # filling it in place still counts (base.group_lr), and it computes what the float does.
        tensor_lrs = [(g, g["lr"]) for g in self.param_groups if isinstance(g["lr"], torch.Tensor)]
        for group, _ in tensor_lrs:
            group["lr"] = group_lr(group)
        # torch.optim wraps each class's step in one that runs the step hooks (and marks it
        # `hooked`): the parent's wrapper, once a parent instance exists, would run them again.
        parent_step = super().step.__func__
        if getattr(parent_step, "hooked", False):
            parent_step = parent_step.__wrapped__
        try:
            return parent_step(self, closure)
        finally:
            for group, lr in tensor_lrs:
                group["lr"] = lr

    def __getstate__(self) -> dict:
        # torch's hooks (private attributes) stay behind, as torch.optim.Optimizer leaves them.
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


def refuse_dtensor(name: str, params, why: str) -> None:
    """A ValueError naming the optimizer when FSDP2 shards any of `params` (DTensor)."""
    if any(isinstance(p, DTensor) for p in params):
        raise ValueError(f"optimizer {name!r} cannot step FSDP2-sharded (DTensor) parameters: "
                         f"{why}; use train.parallel=ddp")
