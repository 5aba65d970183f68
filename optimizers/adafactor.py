"""Adafactor (Shazeer & Stern 2018) with an external learning rate and optional momentum.

The Adam-mini comparison runs Adafactor at AdamW's learning rate with β1 = 0.9, so that is the
default here: the relative step and the parameter scaling of the paper are off unless asked for.
For a tensor with ndim >= 2 (the tied [V, d] embedding included) the second moment is factored
over its last two dims; vectors keep a full one. With step t (per parameter):

    ρ_t  = lr, or min(lr, 1/√t) with relative_step (lr is then the cap; the paper's is 1e-2)
    lr_t = ρ_t · max(eps2, RMS(θ)) with scale_parameter, else ρ_t
    w_t  = t^decay_rate                                  (1 − β̂2t: w_1 = 1 starts from g²)
    r ← lerp(r, mean_row(g²) + eps1, w_t),  c ← lerp(c, mean_col(g²) + eps1, w_t)
    û = g ⊙ rsqrt(r / mean(r)) ⊗ rsqrt(c);  û ← û / max(1, RMS(û) / clip_threshold)
    m ← β1·m + (1 − β1)·lr_t·û;  θ ← θ·(1 − lr_t·λ) − m    (β1 = None: θ ← θ·(1 − lr_t·λ) − lr_t·û)

Weight decay is decoupled and scaled by lr_t, the step size actually taken (HF's and
pytorch-optimizer's convention); with the defaults lr_t = lr, so λ means what it means for AdamW.
Decay applies to tensors with dim >= 2 only (nanoGPT). The momentum averages lr-scaled updates, as
in HF and pytorch-optimizer; with β1 = None and relative_step + scale_parameter this is
torch.optim.Adafactor (lr as the ρ cap).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import group_lr, local
from .factored import BucketedOptimizer, all_reduce_, rms_directions, stat_numel, stat_zeros
from .grouping import decay_groups, trainable
from .registry import (
    OptimizerSpec, check_common, check_flag, check_positive, check_range, check_tuple, register,
)


class Adafactor(BucketedOptimizer):
    def __init__(self, params, lr=1e-3, beta1=0.9, decay_rate=-0.8, eps=(1e-30, 1e-3),
                 clip_threshold=1.0, weight_decay=0.0, relative_step=False, scale_parameter=False):
        check_tuple("adafactor", "eps", eps, "(eps1, eps2)")
        check_common("adafactor", lr, weight_decay, eps=eps)
        if beta1 is not None:
            check_range("adafactor", "beta1", beta1, 0.0, 1.0)
        check_range("adafactor", "decay_rate", decay_rate, -float("inf"), 0.0, hi_open=False)
        check_positive("adafactor", "clip_threshold", clip_threshold)
        check_flag("adafactor", "relative_step", relative_step)
        check_flag("adafactor", "scale_parameter", scale_parameter)
        defaults = dict(lr=lr, beta1=beta1, decay_rate=decay_rate, eps=tuple(eps),
                        clip_threshold=clip_threshold, weight_decay=weight_decay,
                        relative_step=relative_step, scale_parameter=scale_parameter)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        # load_state_dict ends here too. State dicts from older torch versions hold each step as
        # a number, and _update counts steps with a foreach op, which takes tensors only: convert
        # them, as torch's Adam does.
        super().__setstate__(state)
        for per_param in self.state.values():
            if "step" in per_param and not torch.is_tensor(per_param["step"]):
                per_param["step"] = _step_tensor(per_param["step"])

    def _state(self, p, group) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = _step_tensor(0)
            if p.dim() >= 2:
                state["exp_avg_sq_row"] = stat_zeros(p, (-1,))
                state["exp_avg_sq_col"] = stat_zeros(p, (-2,))
            else:
                state["exp_avg_sq"] = torch.zeros_like(p)
            if group["beta1"] is not None:
                state["exp_avg"] = torch.zeros_like(p)
        return state

    def _update(self, group, params, scratch) -> None:
        states = [self._state(p, group) for p in params]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1.0)
        ts = [float(t) for t in steps]
        eps1, eps2 = group["eps"]
        lr = group_lr(group)
        lrs = [min(lr, t**-0.5) if group["relative_step"] else lr for t in ts]
        local_params = [local(p) for p in params]
        if group["scale_parameter"]:
            lrs = _scaled_by_rms(lrs, params, local_params, eps2)

        xs, scales = rms_directions(params, [local(p.grad) for p in params], states,
                                    [t ** group["decay_rate"] for t in ts], eps1,
                                    group["clip_threshold"], scratch)
        if group["weight_decay"]:
            torch._foreach_mul_(local_params, [1 - group["weight_decay"] * lr for lr in lrs])
        torch._foreach_mul_(scales, lrs)
        if group["beta1"] is None:
            torch._foreach_addcmul_(local_params, xs, scales, value=-1.0)
            return
        exp_avgs = [local(s["exp_avg"]) for s in states]
        torch._foreach_mul_(exp_avgs, group["beta1"])
        torch._foreach_addcmul_(exp_avgs, xs, scales, value=1 - group["beta1"])
        torch._foreach_sub_(local_params, exp_avgs)


def _step_tensor(step) -> torch.Tensor:
    # On the CPU whatever the device, like torch's AdamW: reading it costs no device sync.
    return torch.tensor(float(step))


def _scaled_by_rms(lrs, params, local_params, eps2):
    """lr · max(eps2, RMS(θ)) per tensor, RMS over the whole (possibly sharded) tensor."""
    sumsqs = [n.square() for n in torch._foreach_norm(local_params)]
    all_reduce_(sumsqs, params, None)
    torch._foreach_mul_(sumsqs, [1.0 / p.numel() for p in params])
    torch._foreach_sqrt_(sumsqs)
    torch._foreach_clamp_min_(sumsqs, eps2)
    torch._foreach_mul_(sumsqs, lrs)
    return sumsqs


def build(model: nn.Module, lr, beta1, decay_rate, eps, clip_threshold, weight_decay,
          relative_step, scale_parameter) -> Adafactor:
    return Adafactor(decay_groups(model, weight_decay), lr=lr, beta1=beta1, decay_rate=decay_rate,
                     eps=eps, clip_threshold=clip_threshold, weight_decay=weight_decay,
                     relative_step=relative_step, scale_parameter=scale_parameter)


def predict_state_bytes(model: nn.Module, beta1, **_) -> int:
    total = 0
    for p in trainable(model):
        second = stat_numel(p, (-1,)) + stat_numel(p, (-2,)) if p.dim() >= 2 else stat_numel(p)
        momentum = stat_numel(p) if beta1 is not None else 0
        total += (second + momentum) * p.element_size() + 4  # + the fp32 step
    return total


SPEC = register(OptimizerSpec(
    name="adafactor", build=build, predict_state_bytes=predict_state_bytes,
    defaults=dict(lr=1e-3, beta1=0.9, decay_rate=-0.8, eps=(1e-30, 1e-3), clip_threshold=1.0,
                  weight_decay=0.1, relative_step=False, scale_parameter=False),
    # AdamW's: with relative_step off lr is the step size of a clipped, RMS-normalised update, as
    # the Adam-mini comparison runs it (with relative_step on, lr only caps 1/sqrt(t)).
    lr_range=(1e-4, 3e-2),
))
