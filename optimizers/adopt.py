"""ADOPT (Taniguchi et al. 2024, arXiv 2411.02853), pytorch-optimizer 4.1.0's `ADOPT`:

    step 1:  v <- g^2  (no update)
    then:    m <- b1 m + (1 - b1) clip(g / max(sqrt(v), eps), t^0.25) ;  theta <- theta - lr m
             v <- b2 v + (1 - b2) g^2          (v is updated after its use: the point of ADOPT)

Defaults: the authors' (iShohei220/adopt README and adopt.py): lr 1e-3, betas (0.9, 0.9999),
eps 1e-6, the clip t^0.25; weight decay decoupled (their `decouple=True`, AdamW's form) at
nanoGPT's 0.1 on dim >= 2 tensors (their default is none).

Every operation is element-wise: under FSDP2 the update runs on the local shards.
"""

from __future__ import annotations

import pytorch_optimizer as po
from torch import nn
from torch.distributed.tensor import DTensor

from .external import TorchOptimConventions
from .grouping import decay_groups, trainable, two_moments_bytes
from .registry import OptimizerSpec, check_common, check_tuple, register


def clip_at(step: int) -> float:
    # The authors' clip; a module-level function (not pytorch-optimizer's default lambda) so
    # that the optimizer pickles.
    return step ** 0.25


class ADOPT(TorchOptimConventions, po.ADOPT):
    pass


def build(model: nn.Module, lr, betas, eps, weight_decay) -> ADOPT:
    check_tuple("adopt", "betas", betas, "(beta1, beta2)")
    check_common("adopt", lr, weight_decay, betas, eps)
    # DTensor has no sharding rule for the foreach path's clip (`_foreach_maximum_.Scalar` in
    # torch 2.13): shards take the per-tensor path, the same arithmetic.
    sharded = any(isinstance(p, DTensor) for p in trainable(model))
    return ADOPT(decay_groups(model, weight_decay), lr=lr, betas=betas, clip_lambda=clip_at,
                 weight_decay=weight_decay, weight_decouple=True, fixed_decay=False,
                 foreach=False if sharded else None, eps=eps)


def predict_state_bytes(model: nn.Module, **_) -> int:
    # m and v in the parameter's dtype, of this rank's shard; the step is per group.
    return two_moments_bytes(model)


SPEC = register(OptimizerSpec(
    name="adopt", build=build, predict_state_bytes=predict_state_bytes,
    defaults=dict(lr=1e-3, betas=(0.9, 0.9999), eps=1e-6, weight_decay=0.1),
    # Its steps are Adam-sized (a clipped normalised gradient): AdamW's range.
    lr_range=(1e-4, 3e-2),
))
