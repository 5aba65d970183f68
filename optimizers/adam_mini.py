"""Adam-mini (Zhang et al., arXiv 2406.16793) with the semantics of the official v1.1.1.

Adam's update with one second moment v per block instead of per element:

    m   <- b1 m + (1 - b1) g
    v_b <- b2 v_b + (1 - b2) mean_{i in b} g_i^2
    p   <- p (1 - lr wd) - lr / (1 - b1^t) * m / (sqrt(v_b / (1 - b2^t)) + eps)

with the blocks of `partition.py`, a step count per parameter, and no decay on norms and biases.

Speed: the step is memory-bound, so it makes as few full-size passes as possible (a row-norm
read of g, the m lerp, the decay, and one addcmul of m times a per-row step size) and runs
each of them as one multi-tensor op over all parameters; everything per block is a small
tensor. AdamW's foreach step makes about twice the full-size traffic.

Distributed: under DDP gradients arrive averaged and every block is local, so there is no
communication. Under FSDP2 a rank holds a dim-0 slice of each parameter: a row never straddles
ranks, but a head or a whole-tensor block can. Each rank sums g^2 of its own rows into its
blocks, and one all-reduce per step makes every block's sum global. v is small (a value per
block), so it is kept whole on every rank as a replicated DTensor; m is sharded like p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

from .base import GroupwiseOptimizer, all_reduce_batched_, group_lr, local
from .partition import Layout, by_shape, partition
from .registry import OptimizerSpec, check_common, check_range, register


@dataclass(frozen=True)
class _Plan:
    """What the step needs to map this rank's rows of one parameter to its blocks."""

    cols: int
    first_row: int  # this rank's first matrix row (0 unless sharded)
    rows: int  # matrix rows held on this rank
    n_blocks: int
    row_to_block: torch.Tensor | None  # None: row i is block first_row + i
    inv_block_numel: torch.Tensor
    group: dist.ProcessGroup | None  # set when the blocks must be summed across ranks


def _plan(p: torch.Tensor, layout: Layout) -> _Plan:
    shard = local(p)
    first_row, group = 0, None
    if isinstance(p, DTensor):
        shards = [(i, pl) for i, pl in enumerate(p.placements) if isinstance(pl, Shard)]
        if any(pl.dim != 0 for _, pl in shards) or len(shards) > 1:
            raise ValueError(f"adam_mini supports parameters sharded once on dim 0, not {p.placements}")
        if shards:
            _, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
            first_row = offset[0] * (layout.rows // p.shape[0])
            group = p.device_mesh.get_group(shards[0][0])
    rows = shard.numel() // layout.cols
    index = None if layout.one_row_per_block else layout.row_to_block(shard.device)
    return _Plan(
        cols=layout.cols, first_row=first_row, rows=rows, n_blocks=layout.n_blocks,
        row_to_block=None if index is None else index[first_row:first_row + rows],
        inv_block_numel=layout.block_numel(shard.dtype, shard.device).reciprocal_(),
        group=group,
    )


def _zeros_v(p: torch.Tensor, n: int) -> torch.Tensor:
    zeros = local(p).new_zeros(n)
    if isinstance(p, DTensor):  # a DTensor, so that distributed checkpoints see it as state
        return DTensor.from_local(zeros, p.device_mesh, [Replicate()] * p.device_mesh.ndim,
                                  run_check=False)
    return zeros


class AdamMini(GroupwiseOptimizer):
    """Takes the model, not its parameters: the partition comes from the model's structure.

    Two param groups: the decayed tensors, and the norms and biases (weight_decay 0). A group
    added later with `add_param_group` has no model to read its blocks from: see
    `partition.by_shape`.
    """

    def __init__(self, model: nn.Module, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                 v_one_block: bool = False, dim: int | None = None, n_heads: int | None = None):
        check_common("adam_mini", lr, weight_decay, betas, eps)
        for name, value in (("dim", dim), ("n_heads", n_heads)):
            if value is not None:
                check_range("adam_mini", name, value, 1, math.inf)
        # Before super().__init__, which adds the groups through add_param_group.
        self._layouts = partition(model, v_one_block, dim, n_heads)
        self._plans: dict[torch.Tensor, _Plan] = {}
        groups = [
            {"params": [p for p, lay in self._layouts.items() if lay.decay],
             "weight_decay": weight_decay},
            {"params": [p for p, lay in self._layouts.items() if not lay.decay],
             "weight_decay": 0.0},
        ]
        super().__init__([g for g in groups if g["params"]],
                         dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        for p in self.param_groups[-1]["params"]:
            self._plans[p] = _plan(p, self._layouts.setdefault(p, by_shape(p.shape)))

    # torch.optim.Optimizer pickles (and so deep-copies) defaults, state and param_groups only:
    # the partition travels with them, and the plans (which hold process groups) are rebuilt for
    # the copy's parameters. load_state_dict ends in __setstate__ too, and rebuilds the same ones.
    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_layouts": self._layouts}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._plans = {p: _plan(p, lay) for p, lay in self._layouts.items()}

    def _step_group(self, group: dict) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        beta1, beta2 = group["betas"]
        lr, eps, wd = group_lr(group), group["eps"], group["weight_decay"]
        plans = [self._plans[p] for p in params]
        states = [self._state(p, plan) for p, plan in zip(params, plans)]
        # (rows, cols) views of this rank's slice; in-place ops on them update the parameters.
        ps = [local(p).view(-1, plan.cols) for p, plan in zip(params, plans)]
        gs = [local(p.grad).view(-1, plan.cols) for p, plan in zip(params, plans)]
        ms = [local(s["m"]).view(-1, plan.cols) for s, plan in zip(states, plans)]
        vs = [local(s["v"]) for s in states]

        means = self._block_means(gs, plans)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_add_(vs, means, alpha=1 - beta2)

        # Per block: -lr / bc1 / (sqrt(v / bc2) + eps), then spread over the rows of each block.
        steps = [s["step"] for s in states]
        scale = torch._foreach_sqrt(vs)
        torch._foreach_div_(scale, [math.sqrt(1 - beta2**t) for t in steps])
        torch._foreach_add_(scale, eps)
        torch._foreach_reciprocal_(scale)
        torch._foreach_mul_(scale, [-lr / (1 - beta1**t) for t in steps])
        row_scale = [_rows_of(s, plan).unsqueeze(1) for s, plan in zip(scale, plans)]

        torch._foreach_lerp_(ms, gs, 1 - beta1)
        if wd != 0 and lr != 0:
            torch._foreach_mul_(ps, 1 - lr * wd)
        torch._foreach_addcmul_(ps, ms, row_scale)

    def _state(self, p: torch.Tensor, plan: _Plan) -> dict:
        state = self.state[p]
        if not state:
            state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["v"] = _zeros_v(p, plan.n_blocks)
            state["step"] = 0
        state["step"] += 1
        return state

    @staticmethod
    def _block_means(gs: list[torch.Tensor], plans: list[_Plan]) -> list[torch.Tensor]:
        """Mean of g^2 over each block, over all ranks."""
        sums = []
        for g, plan in zip(gs, plans):
            row_sq = torch.linalg.vector_norm(g, dim=1).square_()  # one read of g, no g*g copy
            if plan.row_to_block is not None:
                row_sq = row_sq.new_zeros(plan.n_blocks).index_add_(0, plan.row_to_block, row_sq)
            elif plan.group is not None:  # this rank's slice of one-row blocks
                full = row_sq.new_zeros(plan.n_blocks)
                full[plan.first_row:plan.first_row + plan.rows] = row_sq
                row_sq = full
            sums.append(row_sq)
        # only sharded parameters (FSDP2) have partial sums: one process and DDP send nothing
        all_reduce_batched_([(s, plan.group) for s, plan in zip(sums, plans) if plan.group is not None])
        torch._foreach_mul_(sums, [plan.inv_block_numel for plan in plans])
        return sums


def _rows_of(block_values: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """The value of each row's block, for this rank's rows."""
    if plan.row_to_block is not None:
        return block_values.index_select(0, plan.row_to_block)
    return block_values.narrow(0, plan.first_row, plan.rows)


def build(model: nn.Module, lr, betas, eps, weight_decay, v_one_block, dim, n_heads) -> AdamMini:
    return AdamMini(model, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                    v_one_block=v_one_block, dim=dim, n_heads=n_heads)


def predict_state_bytes(model: nn.Module, v_one_block=False, dim=None, n_heads=None, **_) -> int:
    # m like the parameter, one v per block in its dtype; the step count is a Python int.
    layouts = partition(model, v_one_block, dim, n_heads)
    return sum((p.numel() + lay.n_blocks) * p.element_size() for p, lay in layouts.items())


SPEC = register(OptimizerSpec(
    name="adam_mini", build=build, predict_state_bytes=predict_state_bytes,
    defaults=dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                  # One v for all of V (the official README's `wv_names = {}` for short runs).
                  v_one_block=False,
                  # Head layout for models that do not declare one (official name rules).
                  dim=None, n_heads=None),
    # AdamW's: the authors run it at AdamW's lr, and Wen et al.'s best at 130M (8e-3) was AdamW's.
    lr_range=(1e-4, 3e-2),
))
