"""SM3-II (Anil et al., NeurIPS 2019) with optional momentum, as Google's TF reference computes it.

A tensor of rank p keeps one accumulator per dimension (a_i holds dim i, size 1 elsewhere), so an
m×n weight costs m + n numbers instead of mn:

    ν   = min_i a_i (broadcast) + g²                 a cover of Σ_s g_s², AdaGrad's sum, from above
    a_i ← max of ν over every dim but i              (reassigned, not max'ed with the old a_i)
    ĝ   = g · rsqrt(ν + eps)
    m ← μ·m + (1 − μ)·ĝ;  θ ← θ − lr·m                (μ = 0: θ ← θ − lr·ĝ, and no buffer is kept)

Vectors and scalars keep a full accumulator (diagonal AdaGrad: a ← a + g²).

Learning-rate schedule. SM3 has no decay of its own: the accumulators are running sums, so the
step already shrinks like 1/√t, and its authors use only a warm-up. The suite still multiplies lr
by its warmup + cosine schedule, the same schedule for every optimizer, so that a comparison at
equal budgets changes the optimizer alone; the cosine then adds to SM3's built-in 1/√t decay.
SM3 has no weight decay.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.distributed as dist
from torch import nn

from .base import GroupwiseOptimizer, group_lr, local
from .chunking import consecutive_runs
from .factored import all_reduce_, split_factored, stat_numel, stat_zeros
from .grouping import trainable
from .registry import OptimizerSpec, check_common, check_range, register

# Tensors with ndim >= 2 are stepped in pieces of rows, several pieces at a time, up to a budget
# of elements per batch: ν of each piece, then one foreach rsqrt and update over the batch.
# On the CPU the budget is small (2 MiB of fp32), so that ν, built and used by six passes, never
# leaves the cache: a full-size ν sends each of those passes to memory and, allocated anew every
# step, page-faults its way in too (glibc maps big blocks afresh); on gpt2_small (one thread) that
# took the step from about 300 ms to about 470. Smaller pieces lose to Python's cost per piece,
# much bigger ones fall out of the cache (2^18 to 2^20 measured about equal). On a GPU, where every
# op is a kernel launch and the caching allocator makes ν free, whole tensors go in batches big
# enough to take a handful of foreach launches; the budget bounds ν's memory.
CPU_PIECE_NUMEL = 1 << 19
GPU_BATCH_NUMEL = 1 << 24


def _others(p, i) -> tuple[int, ...]:
    """The dims accumulator i is reduced over: all but i."""
    return tuple(d for d in range(p.dim()) if d != i)


class SM3(GroupwiseOptimizer):
    def __init__(self, params, lr=1e-3, momentum=0.9, eps=1e-30):
        check_common("sm3", lr, eps=eps)
        check_range("sm3", "momentum", momentum, 0.0, 1.0)
        super().__init__(params, dict(lr=lr, momentum=momentum, eps=eps))

    def _state(self, p, group) -> dict:
        state = self.state[p]
        if not state:
            # Accumulators start at eps, not 0: then every ν = min a_i + g² already holds the eps
            # of rsqrt(ν + eps), and so does every later a_i (a max of such ν). One full-size pass
            # fewer per step; the stored accumulators read as the reference's plus eps.
            for i in range(max(p.dim(), 1)):
                state[f"accumulator_{i}"] = stat_zeros(p, _others(p, i))
                local(state[f"accumulator_{i}"]).fill_(group["eps"])
            if group["momentum"] > 0:
                state["momentum_buffer"] = torch.zeros_like(p)
        return state

    def _step_group(self, group: dict) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        states = [self._state(p, group) for p in params]
        mats, vecs = split_factored(params)
        buffers = [local(s["momentum_buffer"]) if "momentum_buffer" in s else None for s in states]
        if mats:
            budget = CPU_PIECE_NUMEL if params[0].device.type == "cpu" else GPU_BATCH_NUMEL
            _factored_step_([local(params[i]) for i in mats], [local(params[i].grad) for i in mats],
                            [[local(states[i][f"accumulator_{d}"]) for d in range(params[i].dim())]
                             for i in mats], [buffers[i] for i in mats], group, budget)
        # ν did not need them: the accumulators are completed across ranks for the next step only
        _complete_maxima([params[i] for i in mats], [states[i] for i in mats])
        if vecs:
            accs = [local(states[i]["accumulator_0"]) for i in vecs]
            grads = [local(params[i].grad) for i in vecs]
            torch._foreach_addcmul_(accs, grads, grads)
            _descend_([local(params[i]) for i in vecs], grads, torch._foreach_rsqrt(accs),
                      [buffers[i] for i in vecs], group)


def _factored_step_(params, grads, accs, buffers, group, budget: int) -> None:
    """The step of local tensors with ndim >= 2 (accs[t]: tensor t's accumulators, by dim), in
    pieces of at most `budget` elements (or one row), batched up to `budget` (see CPU_PIECE_NUMEL).
    A piece's rows own their slice of accs[t][0], which it reassigns at once. The other
    accumulators span every row: a tensor cut into several pieces reads them in each, so their new
    value, a max over all pieces, is gathered aside until the end. A rank whose shard has no rows
    leaves those maxima at 0 (ν >= 0) for the all-reduce to fill."""
    pieces, gathered = [], {}
    for t, g in enumerate(grads):
        rows = max(1, budget // max(math.prod(g.shape[1:]), 1))
        pieces += [(t, slice(start, start + rows)) for start in range(0, g.shape[0], rows)]
        if g.shape[0] > rows or g.shape[0] == 0:
            gathered[t] = [torch.zeros_like(a) for a in accs[t][1:]]
    # min over the accumulators of dims 1.., once per tensor: broadcast against each of its pieces
    others = [functools.reduce(torch.minimum, a[1:]) for a in accs]
    batches = list(consecutive_runs(pieces, [grads[t][rows].numel() for t, rows in pieces], budget))
    # ν of a batch's pieces, in one buffer per dtype (a model may mix them)
    size = max((size for _, size in batches), default=0)
    scratch = {dtype: grads[0].new_empty(size, dtype=dtype) for dtype in {g.dtype for g in grads}}
    for batch, _ in batches:
        nus, offset = [], 0
        for t, rows in batch:
            g, a = grads[t][rows], accs[t]
            out = scratch[g.dtype][offset:offset + g.numel()].view(g.shape)
            nu = torch.minimum(a[0][rows], others[t], out=out)
            offset += g.numel()
            nu.addcmul_(g, g)
            torch.amax(nu, dim=_others(g, 0), keepdim=True, out=a[0][rows])
            for d in range(1, g.dim()):
                if t in gathered:
                    m = gathered[t][d - 1]
                    torch.maximum(m, nu.amax(dim=_others(g, d), keepdim=True), out=m)
                else:
                    torch.amax(nu, dim=_others(g, d), keepdim=True, out=a[d])
            nus.append(nu)
        torch._foreach_rsqrt_(nus)
        _descend_([params[t][rows] for t, rows in batch], [grads[t][rows] for t, rows in batch], nus,
                  [None if buffers[t] is None else buffers[t][rows] for t, rows in batch], group)
    for t, maxima in gathered.items():
        for a, m in zip(accs[t][1:], maxima):
            a.copy_(m)


def _descend_(params, grads, nus, buffers, group) -> None:
    """m ← μ·m + (1 − μ)·g·ν and θ ← θ − lr·m (μ = 0: θ ← θ − lr·g·ν), for ν = rsqrt(ν + eps)."""
    momentum, lr = group["momentum"], group_lr(group)
    if momentum == 0:
        torch._foreach_addcmul_(params, grads, nus, value=-lr)
        return
    torch._foreach_mul_(buffers, momentum)
    torch._foreach_addcmul_(buffers, grads, nus, value=1 - momentum)
    torch._foreach_add_(params, buffers, alpha=-lr)


def _complete_maxima(params, states) -> None:
    """Max-reduce across processes the accumulators reduced over a sharded dim, one collective per
    (tensor ndim, accumulator index): those share the reduced dims."""
    for ndim in sorted({p.dim() for p in params}):
        same = [(p, s) for p, s in zip(params, states) if p.dim() == ndim]
        for i in range(ndim):
            all_reduce_([local(s[f"accumulator_{i}"]) for _, s in same], [p for p, _ in same],
                        _others(same[0][0], i), op=dist.ReduceOp.MAX)


def build(model: nn.Module, lr, momentum, eps) -> SM3:
    return SM3(trainable(model), lr=lr, momentum=momentum, eps=eps)


def predict_state_bytes(model: nn.Module, momentum, **_) -> int:
    total = 0
    for p in trainable(model):
        accumulators = sum(stat_numel(p, _others(p, i)) for i in range(max(p.dim(), 1)))
        total += (accumulators + (stat_numel(p) if momentum > 0 else 0)) * p.element_size()
    return total


SPEC = register(OptimizerSpec(
    name="sm3", build=build, predict_state_bytes=predict_state_bytes,
    defaults=dict(lr=1e-3, momentum=0.9, eps=1e-30),
    # Its accumulators are sums: at AdamW's lr its step is 0.11-0.27x AdamW's on the tiny suite
    # and shrinks as 1/sqrt(t), so it needs 10-100x AdamW's lr (pytorch-optimizer's default: 0.1).
    lr_range=(1e-3, 3e-1),
))
