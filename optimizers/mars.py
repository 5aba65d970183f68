"""MARS (Yuan et al. 2024, arXiv 2411.10438), MARS-AdamW, pytorch-optimizer 4.1.0's `MARS`:
a variance-reduced gradient fed to AdamW, on tensors with dim >= 2:

    c = g + gamma b1 / (1 - b1) (g - g_prev) ;  c <- c / max(1, |c|)    (|c| over the tensor)
    m <- b1 m + (1 - b1) c ;  v <- b2 v + (1 - b2) c^2
    theta <- theta (1 - lr wd) - lr (m / bc1) / (sqrt(v / bc2) + eps)

Vectors get plain AdamW with their own peak lr (lr_1d, scheduled with lr: lr * lr_1d / lr at
build), betas_1d and weight_decay_1d, as in the authors' code (AGI-Arena/MARS `mars.py`), which
decays them too. The previous gradient stands in for the gradient at the previous iterate on the
same batch (the authors' `is_approx=True`, what they train GPT-2 with).

Defaults: the authors' GPT-2 small config (config/train_gpt2_small_mars.py): lr 6e-3, weight decay
0.01, betas (0.95, 0.99), gamma 0.025, lr_1d 3e-3; betas_1d (0.9, 0.95), weight_decay_1d 0.1 and
eps 1e-8 from their mars.py.

Under FSDP2 each rank holds a shard of each tensor, and c is clipped by the norm of the whole
tensor: a sharded model is refused.
"""

from __future__ import annotations

import math

import pytorch_optimizer as po
import torch
from torch import nn

from .external import TorchOptimConventions, refuse_dtensor
from .grouping import trainable
from .registry import OptimizerSpec, check_common, check_range, check_tuple, register


class MARS(TorchOptimConventions, po.MARS):
    pass


def build(model: nn.Module, lr, betas, gamma, weight_decay, lr_1d, betas_1d, weight_decay_1d,
          eps) -> MARS:
    for option, value in (("betas", betas), ("betas_1d", betas_1d)):
        check_tuple("mars", option, value, "(beta1, beta2)")
        for i, beta in enumerate(value):
            check_range("mars", f"{option}[{i}]", beta, 0.0, 1.0)
    check_common("mars", lr, weight_decay, eps=eps)
    check_range("mars", "gamma", gamma, 0.0, math.inf)
    check_range("mars", "lr_1d", lr_1d, 0.0, math.inf)
    check_range("mars", "weight_decay_1d", weight_decay_1d, 0.0, math.inf)
    params = trainable(model)
    refuse_dtensor("mars", params, "it clips each tensor by the norm of the whole tensor")
    # MARS splits the tensors by dimension itself, and fixes lr_1d / lr when built: from the lr's
    # value, so that a tensor lr (read at every step) schedules both.
    opt = MARS(params, lr=float(lr), betas=betas, gamma=gamma, mars_type="adamw",
               optimize_1d=False, lr_1d=lr_1d, betas_1d=tuple(betas_1d), weight_decay=weight_decay,
               weight_decay_1d=weight_decay_1d, weight_decouple=True, fixed_decay=False,
               ams_bound=False, cautious=False, eps=eps)
    if isinstance(lr, torch.Tensor):
        for group in opt.param_groups:
            group["lr"] = lr
    return opt


def predict_state_bytes(model: nn.Module, **_) -> int:
    # m, v and the previous gradient in the parameter's dtype; the step is per group.
    return sum(3 * p.numel() * p.element_size() for p in trainable(model))


SPEC = register(OptimizerSpec(
    name="mars", build=build, predict_state_bytes=predict_state_bytes,
    defaults=dict(lr=6e-3, betas=(0.95, 0.99), gamma=0.025, weight_decay=0.01, lr_1d=3e-3,
                  betas_1d=(0.9, 0.95), weight_decay_1d=0.1, eps=1e-8),
    # The authors' GPT-2 lrs (6e-3 at 124M, 2e-3 at 774M) lie in the upper half; a decade below
    # them for the small CPU model's small, noisy batches.
    lr_range=(5e-4, 5e-2),
))
