"""CAME (Luo et al., ACL 2023): Adafactor's factored second moment plus a factored "confidence".

The algorithm of came-pytorch 0.1.3 (the authors' code), with constant betas (β1, β2, β3):

    û = g ⊙ rsqrt(V̂) / max(1, RMS(·) / clip_threshold)      V̂: factored EMA of g² + eps1 (β2)
    m ← β1·m + (1 − β1)·û
    ndim >= 2:  S = factored EMA of (û − m)² + eps2 (β3);  step = m ⊙ rsqrt(Ŝ)
    ndim < 2:   step = m                                    (no confidence term for vectors)
    θ ← θ·(1 − lr·λ) − lr·step

No bias correction, relative step or parameter scaling. Weight decay is decoupled and scaled by
lr, as in AdamW, on tensors with dim >= 2 only (nanoGPT's rule; came-pytorch decays whatever it
is given). There is no step counter: nothing in the update depends on t.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import group_lr, local
from .factored import (
    BucketedOptimizer, factored_ema_, inverse_root_factors, rms_directions, split_factored,
    stat_numel, stat_zeros,
)
from .grouping import decay_groups, trainable
from .registry import OptimizerSpec, check_common, check_positive, check_tuple, register


class CAME(BucketedOptimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999, 0.9999), eps=(1e-30, 1e-16),
                 clip_threshold=1.0, weight_decay=0.0):
        check_tuple("came", "betas", betas, "(beta1, beta2, beta3)")
        check_tuple("came", "eps", eps, "(eps1, eps2)")
        check_common("came", lr, weight_decay, betas, eps)
        check_positive("came", "clip_threshold", clip_threshold)
        defaults = dict(lr=lr, betas=tuple(betas), eps=tuple(eps), clip_threshold=clip_threshold,
                        weight_decay=weight_decay)
        super().__init__(params, defaults)

    def _state(self, p) -> dict:
        state = self.state[p]
        if not state:
            state["exp_avg"] = torch.zeros_like(p)
            if p.dim() >= 2:
                state["exp_avg_sq_row"] = stat_zeros(p, (-1,))
                state["exp_avg_sq_col"] = stat_zeros(p, (-2,))
                state["exp_avg_res_row"] = stat_zeros(p, (-1,))
                state["exp_avg_res_col"] = stat_zeros(p, (-2,))
            else:
                state["exp_avg_sq"] = torch.zeros_like(p)
        return state

    def _update(self, group, params, scratch) -> None:
        beta1, beta2, beta3 = group["betas"]
        eps1, eps2 = group["eps"]
        lr, weight_decay = group_lr(group), group["weight_decay"]
        states = [self._state(p) for p in params]
        xs, scales = rms_directions(params, [local(p.grad) for p in params], states,
                                    [1 - beta2] * len(params), eps1, group["clip_threshold"],
                                    scratch)
        torch._foreach_mul_(xs, scales)  # xs now hold û
        exp_avgs = [local(s["exp_avg"]) for s in states]
        torch._foreach_lerp_(exp_avgs, xs, 1 - beta1)

        local_params = [local(p) for p in params]
        if weight_decay:
            torch._foreach_mul_(local_params, 1 - lr * weight_decay)
        mats, vecs = split_factored(params)
        if mats:
            mp = [params[i] for i in mats]
            ms = [exp_avgs[i] for i in mats]
            residuals = [xs[i] for i in mats]  # û − m, squared, in û's buffer
            torch._foreach_sub_(residuals, ms)
            torch._foreach_mul_(residuals, residuals)
            rows = [local(states[i]["exp_avg_res_row"]) for i in mats]
            cols = [local(states[i]["exp_avg_res_col"]) for i in mats]
            factored_ema_(rows, cols, mp, residuals, [1 - beta3] * len(mats), eps2)
            row_factors, col_factors = inverse_root_factors(rows, cols, mp)
            steps = [torch.mul(m, c, out=r) for m, c, r in zip(ms, col_factors, residuals)]
            torch._foreach_addcmul_([local_params[i] for i in mats], steps, row_factors, value=-lr)
        if vecs:
            torch._foreach_add_([local_params[i] for i in vecs], [exp_avgs[i] for i in vecs],
                                alpha=-lr)


def build(model: nn.Module, lr, betas, eps, clip_threshold, weight_decay) -> CAME:
    return CAME(decay_groups(model, weight_decay), lr=lr, betas=betas, eps=eps,
                clip_threshold=clip_threshold, weight_decay=weight_decay)


def predict_state_bytes(model: nn.Module, **_) -> int:
    total = 0
    for p in trainable(model):
        if p.dim() >= 2:  # row and column factors of both g² and the instability
            second = 2 * (stat_numel(p, (-1,)) + stat_numel(p, (-2,)))
        else:
            second = stat_numel(p)
        total += (stat_numel(p) + second) * p.element_size()
    return total


SPEC = register(OptimizerSpec(
    name="came", build=build, predict_state_bytes=predict_state_bytes,
    defaults=dict(lr=1e-3, betas=(0.9, 0.999, 0.9999), eps=(1e-30, 1e-16), clip_threshold=1.0,
                  weight_decay=0.1),
    # AdamW's range halved: its authors tune it at 0.5-0.9x AdamW's lr for pre-training (README).
    lr_range=(5e-5, 1.5e-2),
))
