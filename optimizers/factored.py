"""What Adafactor, CAME and SM3 share: statistics kept per row / per column instead of per element.

Adafactor and CAME keep an exponential average of g² as a row vector r and a column vector c
(over the last two dims of every tensor with ndim >= 2) and rebuild the preconditioner
rsqrt(r / mean(r)) ⊗ rsqrt(c); SM3 keeps one max-accumulator per dimension. A statistic is stored
with the reduced dims kept as size 1 ([m, 1] rows, [1, n] columns), so it broadcasts against the
weight without reshapes.

Sharded parameters (FSDP2): every rank holds a Shard(0) slice of each weight, so a statistic taken
over a sharded dim (a column mean, a tensor's RMS) is only partial on each rank. The optimizers do
their arithmetic on the local shards (`local`) and complete those partial statistics with
`all_reduce_`, one collective per statistic for a whole bucket of tensors; on one process it
does nothing. Dividing by the global sizes afterwards makes uneven shards come out right. State is
created by `stat_zeros` as a DTensor on the parameter's mesh (a DCP checkpoint restores plain
local-shard state to the wrong rank), sharded where the parameter is and replicated along a dim
the statistic reduced away.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor, Replicate

from .base import GroupwiseOptimizer, all_reduce_batched_, local
from .chunking import consecutive_runs


def _collapsed(shape, dims) -> list[int]:
    return [1 if d in dims else s for d, s in enumerate(shape)]


def _normalize(p: Tensor, dims) -> set[int]:
    return {d % p.dim() for d in dims} if p.dim() else set()


def stat_zeros(p: Tensor, dims=()) -> Tensor:
    """Zeros shaped like p with `dims` collapsed to size 1: the home of a statistic over dims."""
    dims = _normalize(p, dims)
    zeros = torch.zeros(_collapsed(local(p).shape, dims), dtype=p.dtype, device=p.device)
    if not isinstance(p, DTensor):
        return zeros
    placements = [
        Replicate() if pl.is_shard() and pl.dim % p.dim() in dims else pl for pl in p.placements
    ]
    shape = torch.Size(_collapsed(p.shape, dims))
    stride = torch.empty(shape, device="meta").stride()
    return DTensor.from_local(zeros, p.device_mesh, placements, run_check=False,
                              shape=shape, stride=stride)


def stat_numel(p: Tensor, dims=()) -> int:
    """Elements this rank holds of `stat_zeros(p, dims)`, from shapes alone."""
    return math.prod(_collapsed(local(p).shape, _normalize(p, dims)))


def _spanning_groups(p: Tensor, dims) -> list:
    """The mesh groups whose shards split one of `dims` of p: reductions over dims cross them."""
    if not isinstance(p, DTensor):
        return []
    dims = _normalize(p, range(p.dim()) if dims is None else dims)
    groups = []
    for mesh_dim, pl in enumerate(p.placements):
        if pl.is_partial():
            raise ValueError("factored optimizers take sharded or replicated tensors, not Partial")
        if pl.is_shard() and pl.dim % p.dim() in dims:
            groups.append(p.device_mesh.get_group(mesh_dim))
    return groups


def all_reduce_(parts: list[Tensor], params: list[Tensor], dims, op=dist.ReduceOp.SUM) -> None:
    """Complete in place the reductions over `dims` of each params[i] (None: over every dim) that
    each rank took over its own shard, parts[i]. Batched: one collective per process group."""
    all_reduce_batched_([(part, group) for part, p in zip(parts, params)
                         for group in _spanning_groups(p, dims)], op)


# A step runs over buckets of at most this many elements (a bigger tensor goes alone), which
# bounds its full-size temporaries to about one bucket instead of a copy of every gradient.
BUCKET_NUMEL = 1 << 24


def buckets(params: list[Tensor]):
    """Yield (bucket, scratch): consecutive runs of params, and for each tensor with ndim >= 2 an
    uninitialised tensor shaped like its local shard (None for the others), the step's one
    full-size temporary for it. The scratch tensors of every bucket are views of one buffer,
    because on the CPU each fresh allocation of a large tensor page-faults its way in, at about
    the cost of a pass over it. Global sizes cut the buckets, so every rank cuts the same ones."""
    runs = [run for run, _ in consecutive_runs(params, [p.numel() for p in params], BUCKET_NUMEL)]
    if not runs:
        return
    need = max(sum(local(p).numel() for p in run if p.dim() >= 2) for run in runs)
    buffer = torch.empty(need, dtype=params[0].dtype, device=params[0].device)
    for run in runs:
        scratch, offset = [], 0
        for p in run:
            shard = local(p)
            if p.dim() < 2:
                scratch.append(None)
            elif shard.dtype == buffer.dtype and shard.device == buffer.device:
                scratch.append(buffer[offset:offset + shard.numel()].view(shard.shape))
                offset += shard.numel()
            else:
                scratch.append(torch.empty_like(shard))
        yield run, scratch


class BucketedOptimizer(GroupwiseOptimizer):
    """step() for Adafactor and CAME (SM3 cuts its own pieces): each group's parameters that have
    a gradient go, bucket by bucket (see `buckets`), to the subclass's `_update(group, params,
    scratch)`."""

    def _step_group(self, group: dict) -> None:
        for params, scratch in buckets([p for p in group["params"] if p.grad is not None]):
            self._update(group, params, scratch)

    def _update(self, group: dict, params: list[Tensor], scratch: list) -> None:
        raise NotImplementedError


def split_factored(params: list[Tensor]) -> tuple[list[int], list[int]]:
    """Indices of the tensors whose last two dims are factored (ndim >= 2) and of the others."""
    mats = [i for i, p in enumerate(params) if p.dim() >= 2]
    vecs = [i for i, p in enumerate(params) if p.dim() < 2]
    return mats, vecs


def factored_ema_(rows, cols, params, squares, weights, eps: float) -> None:
    """r <- lerp(r, mean_row(x²) + eps, w) and c <- lerp(c, mean_col(x²) + eps, w) for local
    rows/cols, given squares = x² (local shards). eps on the means equals the references'
    x² + eps."""
    row_sums = [sq.sum(-1, keepdim=True) for sq in squares]
    col_sums = [sq.sum(-2, keepdim=True) for sq in squares]
    all_reduce_(row_sums, params, (-1,))
    all_reduce_(col_sums, params, (-2,))
    torch._foreach_mul_(row_sums, [1.0 / p.shape[-1] for p in params])
    torch._foreach_mul_(col_sums, [1.0 / p.shape[-2] for p in params])
    torch._foreach_add_(row_sums, eps)
    torch._foreach_add_(col_sums, eps)
    torch._foreach_lerp_(rows, row_sums, weights)
    torch._foreach_lerp_(cols, col_sums, weights)


def inverse_root_factors(rows, cols, params) -> tuple[list[Tensor], list[Tensor]]:
    """rsqrt(r / mean(r)) and rsqrt(c): their outer product is the factored rsqrt(E[x²])."""
    row_means = [r.sum(-2, keepdim=True) for r in rows]
    all_reduce_(row_means, params, (-2,))
    torch._foreach_mul_(row_means, [1.0 / p.shape[-2] for p in params])
    row_factors = torch._foreach_div(rows, row_means)
    torch._foreach_rsqrt_(row_factors)
    return row_factors, torch._foreach_rsqrt(cols)


def clip_scales(sumsqs, params, threshold: float) -> list[Tensor]:
    """1 / max(1, RMS(u) / threshold) per tensor from the local Σu²: update clipping as 0-d
    tensors, so the step never waits on the device for a Python number."""
    all_reduce_(sumsqs, params, None)
    torch._foreach_mul_(sumsqs, [1.0 / (p.numel() * threshold**2) for p in params])
    torch._foreach_sqrt_(sumsqs)
    torch._foreach_clamp_min_(sumsqs, 1.0)
    torch._foreach_reciprocal_(sumsqs)
    return sumsqs


def rms_directions(params, grads, states, weights, eps: float, clip_threshold: float, scratch):
    """Adafactor's and CAME's direction û = g ⊙ rsqrt(V̂) / max(1, RMS(·)/clip_threshold), where V̂
    is the factored (ndim >= 2) or full (ndim < 2) EMA of g² + eps with lerp weights `weights`.
    Updates that second-moment state; grads are local shards.

    Returns (xs, scales) with û = xs[i] * scales[i]. For a factored tensor xs[i] = g ⊙ rsqrt(c) and
    the row factor rides in the [..., m, 1] scale, which spares a full-size pass; its RMS comes from
    the row norms of xs[i]. xs[i] is scratch[i] for those (see `buckets`), a fresh tensor for the
    others; the caller may overwrite them.
    """
    mats, vecs = split_factored(params)
    xs, scales, sumsqs = [None] * len(params), [None] * len(params), [None] * len(params)
    if mats:
        mp = [params[i] for i in mats]
        mg = [grads[i] for i in mats]
        rows = [local(states[i]["exp_avg_sq_row"]) for i in mats]
        cols = [local(states[i]["exp_avg_sq_col"]) for i in mats]
        squares = [torch.mul(g, g, out=scratch[i]) for g, i in zip(mg, mats)]
        factored_ema_(rows, cols, mp, squares, [weights[i] for i in mats], eps)
        row_factors, col_factors = inverse_root_factors(rows, cols, mp)
        for k, i in enumerate(mats):
            xs[i] = torch.mul(mg[k], col_factors[k], out=squares[k])  # g² is spent
            scales[i] = row_factors[k]
            row_norms = torch.linalg.vector_norm(xs[i], dim=-1, keepdim=True)
            sumsqs[i] = (row_norms.square_() * row_factors[k].square()).sum()
    if vecs:
        vg = [grads[i] for i in vecs]
        avg_sq = [local(states[i]["exp_avg_sq"]) for i in vecs]
        g2 = torch._foreach_mul(vg, vg)
        torch._foreach_add_(g2, eps)
        torch._foreach_lerp_(avg_sq, g2, [weights[i] for i in vecs])
        us = torch._foreach_rsqrt(avg_sq)
        torch._foreach_mul_(us, vg)
        for i, u, norm in zip(vecs, us, torch._foreach_norm(us)):
            xs[i], sumsqs[i] = u, norm.square()
    clip = clip_scales(sumsqs, params, clip_threshold)
    for i in vecs:
        scales[i] = clip[i]
    if mats:
        torch._foreach_mul_([scales[i] for i in mats], [clip[i] for i in mats])
    return xs, scales
