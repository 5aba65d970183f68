"""AdEMAMix (Pagliardini, Ablin, Grangier; arXiv 2409.03137) with Apple's semantics
(apple/ml-ademamix `pytorch/ademamix.py`, HEAD c3d73c0), per-parameter step t:

    m1 <- b1 m1 + (1 - b1) g                      fast EMA (none kept when b1 = 0: m1 = g)
    m2 <- b3(t) m2 + (1 - b3(t)) g                slow EMA, not bias-corrected
    v  <- b2 v + (1 - b2) g^2
    theta <- theta - lr * ((m1 / bc1 + alpha(t) m2) / (sqrt(v) / sqrt(bc2) + eps) + wd * theta)

alpha(t) ramps linearly from 0 to alpha over `alpha_warmup` steps. b3(t) grows from b1 to b3 over
`beta3_warmup` steps so that the EMA's half-life grows linearly, with Apple's `+1e-8` inside the
log (pytorch-optimizer's closed form drops it, which moves b3(t) by up to ~3e-7 and the parameters
by ~2e-6 after 30 steps). The paper sets both warmups to the run's total steps ("we typically use
T_alpha,beta3 = T"): they are budget options, which the runner fills with the run's length; None
(the default outside a run) turns a scheduler off, as in Apple's code. Without them large-b3 runs
diverged early in the paper (§3, App. C.1.4).

Defaults: Apple's betas and eps; alpha 5.0, the paper's 1.3B setting (App. B.1) and the middle of
its "alpha in [4, 10] works well" (Apple's code defaults to 2.0, its README example to 8); weight
decay 0.1 AdamW-style on dim >= 2 tensors, as in the paper (Apple's code defaults to 0).

Under FSDP2 the parameters are DTensor shards and every operation is element-wise: the update runs
on the local shards and the state stays DTensor.
"""

from __future__ import annotations

import math
import numbers
from collections import defaultdict

import torch
from torch import nn

from .base import GroupwiseOptimizer, group_lr, local
from .chunking import chunks
from .grouping import decay_groups, trainable
from .registry import OptimizerSpec, check_common, check_range, check_tuple, register


def alpha_at(step: int, alpha: float, warmup: int | None) -> float:
    """alpha, ramped linearly from 0 over the first `warmup` steps."""
    if warmup is None or step >= warmup:
        return alpha
    return step / warmup * alpha


def _half_life(beta: float) -> float:
    # Steps for beta^k to fall to 1/2, minus one; Apple's +1e-8 also keeps beta = 0 finite.
    return math.log(0.5) / math.log(beta + 1e-8) - 1


def beta3_at(step: int, beta1: float, beta3: float, warmup: int | None) -> float:
    """beta3, grown from beta1 over the first `warmup` steps with a linearly growing half-life."""
    if warmup is None or step >= warmup:
        return beta3
    frac = step / warmup
    half_life = (1 - frac) * _half_life(beta1) + frac * _half_life(beta3)
    return 0.5 ** (1 / (half_life + 1))


class AdEMAMix(GroupwiseOptimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999, 0.9999), alpha=5.0, alpha_warmup=None,
                 beta3_warmup=None, eps=1e-8, weight_decay=0.0):
        check_tuple("ademamix", "betas", betas, "(beta1, beta2, beta3)")
        check_common("ademamix", lr, weight_decay, betas, eps)
        check_range("ademamix", "alpha", alpha, 0.0, math.inf)
        for name, warmup in (("alpha_warmup", alpha_warmup), ("beta3_warmup", beta3_warmup)):
            if warmup is not None and (isinstance(warmup, bool)
                                       or not isinstance(warmup, numbers.Integral) or warmup < 1):
                raise ValueError(
                    f"optimizer 'ademamix': {name}={warmup!r} must be None or a positive integer"
                )
        super().__init__(params, dict(
            lr=lr, betas=tuple(betas), alpha=alpha, alpha_warmup=alpha_warmup,
            beta3_warmup=beta3_warmup, eps=eps, weight_decay=weight_decay,
        ))

    def _step_group(self, group: dict) -> None:
        # Steps are per parameter (Apple's); they differ only where a grad was once None.
        by_step = defaultdict(list)
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                self._init_state(state, p, group["betas"][0])
            state["step"] += 1
            by_step[state["step"]].append(p)
        for step, params in by_step.items():
            for run in chunks(params):
                self._update(group, run, step)

    @staticmethod
    def _init_state(state: dict, p: torch.Tensor, beta1: float) -> None:
        state["step"] = 0
        if beta1 != 0:
            state["exp_avg_fast"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_slow"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _update(self, group: dict, params: list[torch.Tensor], step: int) -> None:
        beta1, beta2, beta3 = group["betas"]
        lr = group_lr(group)
        alpha = alpha_at(step, group["alpha"], group["alpha_warmup"])
        beta3_t = beta3_at(step, beta1, beta3, group["beta3_warmup"])
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step

        theta = [local(p) for p in params]
        grads = [local(p.grad) for p in params]
        slows = [local(self.state[p]["exp_avg_slow"]) for p in params]
        exp_avg_sqs = [local(self.state[p]["exp_avg_sq"]) for p in params]
        if beta1 != 0:
            fasts = [local(self.state[p]["exp_avg_fast"]) for p in params]
            torch._foreach_lerp_(fasts, grads, 1 - beta1)
        else:
            fasts = grads  # Apple: with beta1 = 0 the fast EMA is the gradient itself
        torch._foreach_lerp_(slows, grads, 1 - beta3_t)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)

        # The same update with the bias corrections moved into the step sizes, which saves a
        # pass, and applied as two addcdivs, which saves a full-size temporary (allocating one
        # costs more than the extra pass):
        #   (m1/bc1 + alpha m2) / (sqrt(v)/sqrt(bc2) + eps)
        #     = sqrt(bc2)/bc1 * m1 / d + sqrt(bc2) alpha * m2 / d,   d = sqrt(v) + eps sqrt(bc2).
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denominators, group["eps"] * math.sqrt(bias_correction2))
        # lr * wd * theta is taken from the pre-update theta, as in Apple's code.
        if group["weight_decay"] != 0:
            torch._foreach_mul_(theta, 1 - lr * group["weight_decay"])
        step_size = lr * math.sqrt(bias_correction2)
        torch._foreach_addcdiv_(theta, fasts, denominators, value=-step_size / bias_correction1)
        if alpha != 0:
            torch._foreach_addcdiv_(theta, slows, denominators, value=-step_size * alpha)


def build(model: nn.Module, lr, betas, alpha, alpha_warmup, beta3_warmup, eps,
          weight_decay) -> AdEMAMix:
    return AdEMAMix(decay_groups(model, weight_decay), lr=lr, betas=betas, alpha=alpha,
                    alpha_warmup=alpha_warmup, beta3_warmup=beta3_warmup, eps=eps,
                    weight_decay=weight_decay)


def predict_state_bytes(model: nn.Module, betas, **_) -> int:
    # Slow EMA and v, plus the fast EMA unless beta1 = 0; this rank's shard under FSDP.
    n_buffers = 2 if betas[0] == 0 else 3
    return sum(n_buffers * local(p).numel() * p.element_size() for p in trainable(model))


SPEC = register(OptimizerSpec(
    name="ademamix", build=build, predict_state_bytes=predict_state_bytes,
    defaults=dict(lr=1e-3, betas=(0.9, 0.999, 0.9999), alpha=5.0, alpha_warmup=None,
                  beta3_warmup=None, eps=1e-8, weight_decay=0.1),
    budget_options=("alpha_warmup", "beta3_warmup"),
    # The paper's best lrs are AdamW's or below (1e-3 at 110M, 3e-4 at 1.3B; App. B.1).
    lr_range=(1e-4, 1e-2),
))
