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

import torch
import torch.distributed as dist
from torch import nn

from .base import local
from .factored import BucketedOptimizer, all_reduce_, split_factored, stat_numel, stat_zeros
from .grouping import trainable
from .registry import OptimizerSpec, check_common, check_range, register


def _others(p, i) -> tuple[int, ...]:
    """The dims accumulator i is reduced over: all but i."""
    return tuple(d for d in range(p.dim()) if d != i)


class SM3(BucketedOptimizer):
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

    def _update(self, group, params, scratch) -> None:
        states = [self._state(p, group) for p in params]
        grads = [local(p.grad) for p in params]
        mats, vecs = split_factored(params)
        nus: list = [None] * len(params)  # ν + eps, then rsqrt(ν + eps)
        for i in mats:
            accs = [local(states[i][f"accumulator_{d}"]) for d in range(params[i].dim())]
            nu = torch.minimum(accs[0], accs[1], out=scratch[i])
            for acc in accs[2:]:
                torch.minimum(nu, acc, out=nu)
            nus[i] = nu.addcmul_(grads[i], grads[i])
            for d, acc in enumerate(accs):
                # not amax(out=acc): that path is about 2x slower over dim 0 on the CPU
                acc.copy_(nu.amax(dim=_others(params[i], d), keepdim=True))
        _complete_maxima([params[i] for i in mats], [states[i] for i in mats])
        if mats:
            torch._foreach_rsqrt_([nus[i] for i in mats])
        if vecs:
            accs = [local(states[i]["accumulator_0"]) for i in vecs]
            torch._foreach_addcmul_(accs, [grads[i] for i in vecs], [grads[i] for i in vecs])
            for i, nu in zip(vecs, torch._foreach_rsqrt(accs)):
                nus[i] = nu

        local_params = [local(p) for p in params]
        momentum = group["momentum"]
        if momentum == 0:
            torch._foreach_addcmul_(local_params, grads, nus, value=-group["lr"])
            return
        buffers = [local(s["momentum_buffer"]) for s in states]
        torch._foreach_mul_(buffers, momentum)
        torch._foreach_addcmul_(buffers, grads, nus, value=1 - momentum)
        torch._foreach_add_(local_params, buffers, alpha=-group["lr"])


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
))
