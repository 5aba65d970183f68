"""Lion (Chen et al. 2023, arXiv 2302.06675), pytorch-optimizer 4.1.0's `Lion`:

    u = sign(b1 m + (1 - b1) g) ;  m <- b2 m + (1 - b2) g
    theta <- theta (1 - lr wd) - lr u

Defaults: the paper's (and google/automl lion_pytorch.py's) betas (0.9, 0.99) and lr 1e-4; the
paper (§5): "a suitable learning rate for Lion is typically 3-10x smaller than that for AdamW"
and the decoupled weight decay 3-10x larger "to maintain a similar strength" (lr * wd): 10x
AdamW's 0.1 here, on nanoGPT's dim >= 2 tensors, so lr * wd is AdamW's.

Every operation is element-wise: under FSDP2 the update runs on the local shards.
"""

from __future__ import annotations

import pytorch_optimizer as po
from torch import nn

from .base import local
from .external import TorchOptimConventions
from .grouping import decay_groups, trainable
from .registry import OptimizerSpec, check_common, check_tuple, register


class Lion(TorchOptimConventions, po.Lion):
    pass


def build(model: nn.Module, lr, betas, weight_decay) -> Lion:
    check_tuple("lion", "betas", betas, "(beta1, beta2)")
    check_common("lion", lr, weight_decay, betas)
    return Lion(decay_groups(model, weight_decay), lr=lr, betas=betas, weight_decay=weight_decay,
                weight_decouple=True, fixed_decay=False)


def predict_state_bytes(model: nn.Module, **_) -> int:
    # One momentum buffer in the parameter's dtype, of this rank's shard; the step is per group.
    return sum(local(p).numel() * p.element_size() for p in trainable(model))


SPEC = register(OptimizerSpec(
    name="lion", build=build, predict_state_bytes=predict_state_bytes,
    defaults=dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=1.0),
    # AdamW's range, 3-10x lower (the paper's rule): every element moves by lr per step.
    lr_range=(1e-5, 3e-3),
))
