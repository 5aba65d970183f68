"""LAMB (You et al., arXiv 1904.00962) with cybertronai's semantics (pytorch-lamb, HEAD d3ab8dc).

    m <- b1 m + (1 - b1) g          v <- b2 v + (1 - b2) g^2          (no bias correction)
    u  = m / (sqrt(v) + eps) + wd * theta                            (decay inside the trust ratio)
    tau = min(|theta|, 10) / |u|, or 1 when either norm is 0
    theta <- theta - lr * tau * u

Why this reference and not apex/timm's: the LAMB implementations disagree (bias correction,
where the decay goes, which tensors get a trust ratio, a hidden global gradient clip in apex/timm).
cybertronai's is the one that (a) pytorch-optimizer 4.1.0 reproduces
(`Lamb(adam_debias=True, weight_decouple=False)`), so our parity test is against a PyPI package and
not a private copy, (b) Semenov et al. 2025, the latest LLM optimizer benchmark, use by default,
and (c) hides no gradient clipping: clipping stays the harness's own, as for every optimizer.
pytorch-optimizer adds eps to |u| in tau; cybertronai does not, and neither do we. With eps = 0 the
two agree to rounding; with eps > 0 tau differs by a factor 1 + eps/|u| (|u| is about sqrt(numel)).

The trust ratio applies to every tensor (cybertronai), zero-initialised biases included: their
|theta| = 0 gives tau = 1 until they move. Weight decay follows the harness's rule (dim >= 2 only).
Unlike cybertronai we keep no per-step norms in the state (they are logging aids), so the state is
exactly m and v.

Under FSDP2 the parameters are DTensor shards: the arithmetic runs on the local shards, and the
per-tensor squared norms are summed across the shards (one all-reduce per step, or per chunk of
the step on the CPU: see chunking.py) so that tau is that of the whole tensor.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from .base import GroupwiseOptimizer, group_lr, local
from .chunking import chunks
from .grouping import decay_groups, two_moments_bytes
from .registry import OptimizerSpec, check_common, check_tuple, register

# cybertronai's cap on |theta| in the trust ratio: keeps large tensors from taking huge steps.
WEIGHT_NORM_CAP = 10.0


def _sharding(t: torch.Tensor):
    return (t.device_mesh, t.placements) if isinstance(t, DTensor) else None


def _global_norms(local_tensors: list[torch.Tensor], sharding) -> torch.Tensor:
    """The 2-norm of each whole tensor, given this rank's shards of them (all sharded alike)."""
    norms = torch.stack(torch._foreach_norm(local_tensors))
    if sharding is None:
        return norms
    mesh, placements = sharding
    squares = norms.square()
    for mesh_dim, placement in enumerate(placements):
        if placement.is_shard():
            dist.all_reduce(squares, group=mesh.get_group(mesh_dim))
    return squares.sqrt()


class Lamb(GroupwiseOptimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0):
        check_tuple("lamb", "betas", betas, "(beta1, beta2)")
        check_common("lamb", lr, weight_decay, betas, eps)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay))

    def _step_group(self, group: dict) -> None:
        # A batch's norms are stacked into one tensor and all-reduced together: it needs one mesh
        # (under FSDP2, every parameter's) and one dtype (stacking would promote float32 norms,
        # and so their trust ratios, to float64).
        batches = defaultdict(list)
        for p in group["params"]:
            if p.grad is not None:
                batches[_sharding(p), p.dtype].append(p)
        for (sharding, _), params in batches.items():
            for run in chunks(params):
                self._update(group, run, sharding)

    def _update(self, group: dict, params: list[torch.Tensor], sharding) -> None:
        beta1, beta2 = group["betas"]
        for p in params:
            state = self.state[p]
            if not state:
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        theta = [local(p) for p in params]
        grads = [local(p.grad) for p in params]
        exp_avgs = [local(self.state[p]["exp_avg"]) for p in params]
        exp_avg_sqs = [local(self.state[p]["exp_avg_sq"]) for p in params]

        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)

        # u = m / (sqrt(v) + eps) + wd * theta, built in one temporary per tensor.
        updates = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(updates, group["eps"])
        torch._foreach_reciprocal_(updates)
        torch._foreach_mul_(updates, exp_avgs)
        if group["weight_decay"] != 0:
            torch._foreach_add_(updates, theta, alpha=group["weight_decay"])

        # Both kinds of norms in one call (and one all-reduce when sharded).
        weight_norms, update_norms = _global_norms([*theta, *updates], sharding).chunk(2)
        weight_norms = weight_norms.clamp(max=WEIGHT_NORM_CAP)
        # where() instead of a Python branch keeps the step free of host syncs; the 0/0 and x/0
        # it computes are never selected.
        trust = torch.where(
            (weight_norms > 0) & (update_norms > 0), weight_norms / update_norms, 1.0
        )
        # One pass: theta += u * (-lr tau), the per-tensor factor broadcast from a 0-d tensor.
        torch._foreach_addcmul_(theta, updates, trust.mul_(-group_lr(group)).unbind())


def build(model: nn.Module, lr, betas, eps, weight_decay) -> Lamb:
    return Lamb(decay_groups(model, weight_decay), lr=lr, betas=betas, eps=eps,
                weight_decay=weight_decay)


def predict_state_bytes(model: nn.Module, **_) -> int:
    # m and v in the parameter's dtype, of this rank's shard (the whole tensor without FSDP).
    return two_moments_bytes(model)


SPEC = register(OptimizerSpec(
    name="lamb", build=build, predict_state_bytes=predict_state_bytes,
    # weight_decay: the harness's nanoGPT value on dim >= 2 tensors, as for AdamW (cybertronai: 0).
    defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.1),
    # The trust ratio makes a tensor's step lr * min(|theta|, 10): per element 0.003-0.06x AdamW's
    # at the same lr on the tiny suite, so its useful lr is 15-300x AdamW's.
    lr_range=(1e-3, 3e-1),
))
