"""Schedule-Free AdamW (Defazio et al. 2024, arXiv 2405.15682), pytorch-optimizer 4.1.0's
`ScheduleFreeAdamW`. Gradients are taken at y, an interpolation of the averaged iterate x and
the base iterate z; with c_t = lr_max^2 / sum of lr_max^2 so far:

    v <- b2 v + (1 - b2) g^2 ;  u = g / (sqrt(v / bc2) + eps) + wd y
    y <- (1 - c_t) y + c_t z + lr (b1 (1 - c_t) - 1) u ;  z <- z - lr u
    evaluation weights:  x = (y - (1 - b1) z) / b1

The model holds y while training and x for evaluation: the loop calls `eval()` before every
evaluation and checkpoint and `train()` after (runners/train.py), so checkpoints hold x, as the
authors ask.

Defaults: the authors' (facebookresearch/schedule_free `AdamWScheduleFree`): lr 2.5e-3, betas
(0.9, 0.999), eps 1e-8, r 0, weight_lr_power 2, warmup_steps 0 (the run's own warmup applies;
the authors recommend one); weight decay at nanoGPT's 0.1 on dim >= 2 tensors (theirs: 0). The
authors mean a constant lr after warmup: a suite should give it `budget.schedule=constant`.

Every operation is element-wise: under FSDP2 the update runs on the local shards.
"""

from __future__ import annotations

import math

import pytorch_optimizer as po
from torch import nn

from .external import TorchOptimConventions
from .grouping import decay_groups, two_moments_bytes
from .registry import OptimizerSpec, check_common, check_range, check_tuple, register


class ScheduleFreeAdamW(TorchOptimConventions, po.ScheduleFreeAdamW):
    pass


def build(model: nn.Module, lr, betas, eps, weight_decay, r, weight_lr_power,
          warmup_steps) -> ScheduleFreeAdamW:
    check_tuple("schedule_free_adamw", "betas", betas, "(beta1, beta2)")
    check_common("schedule_free_adamw", lr, weight_decay, betas, eps)
    if betas[0] == 0:  # x = (y - (1 - b1) z) / b1
        raise ValueError("optimizer 'schedule_free_adamw': betas[0]=0 leaves no evaluation "
                         "weights; it must be in (0, 1)")
    check_range("schedule_free_adamw", "r", r, 0.0, math.inf)
    check_range("schedule_free_adamw", "weight_lr_power", weight_lr_power, 0.0, math.inf)
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"optimizer 'schedule_free_adamw': warmup_steps={warmup_steps!r} must "
                         "be an integer >= 0")
    return ScheduleFreeAdamW(decay_groups(model, weight_decay), lr=lr, betas=betas,
                             weight_decay=weight_decay, r=r, weight_lr_power=weight_lr_power,
                             warmup_steps=warmup_steps, eps=eps)


def predict_state_bytes(model: nn.Module, **_) -> int:
    # z and v in the parameter's dtype, of this rank's shard; the step and averaging weights
    # are per group.
    return two_moments_bytes(model)


SPEC = register(OptimizerSpec(
    name="schedule_free_adamw", build=build, predict_state_bytes=predict_state_bytes,
    defaults=dict(lr=2.5e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, r=0.0,
                  weight_lr_power=2.0, warmup_steps=0),
    # The authors find lrs 1-10x those of schedule-based AdamW best: AdamW's range, moved up.
    lr_range=(3e-4, 1e-1),
))
