"""SOAP (Vyas et al. 2024, arXiv 2409.11321), pytorch-optimizer 4.1.0's `SOAP`: Adam run in the
eigenbasis of Shampoo's preconditioner, per tensor:

    L <- s L + (1 - s) G G^T ;  R <- s R + (1 - s) G^T G       (one per dim <= max_precondition_dim)
    Q_L, Q_R: eigenvectors (eigh at the first step, one QR power step every precondition_frequency)
    G' = Q_L^T G Q_R ;  m <- b1 m + (1 - b1) G ;  v <- b2 v + (1 - b2) G'^2
    theta <- theta - lr bc Q_L ((Q_L^T m Q_R) / (sqrt(v) + eps)) Q_R^T ;  theta <- theta (1 - lr wd)

The first step only gathers statistics (no update), as in the authors' code. Vectors get plain
Adam (precondition_1d off); a dim above max_precondition_dim (GPT-2's 50304-row embedding) keeps
the identity.

Defaults: the authors' README (nikhilvyas/SOAP): lr 3e-3, betas (0.95, 0.95), weight decay 0.01,
precondition_frequency 10; the rest as their soap.py (shampoo_beta = b2, max_precondition_dim
10000, eps 1e-8). Decay on nanoGPT's dim >= 2 tensors.

Under FSDP2 each rank would hold a shard of each matrix and of its statistics, and the
eigenvectors are those of the whole tensor's: a sharded model is refused.
"""

from __future__ import annotations

import pytorch_optimizer as po
from torch import nn

from .external import TorchOptimConventions, refuse_dtensor
from .grouping import decay_groups, trainable
from .registry import (
    OptimizerSpec, check_common, check_flag, check_positive, check_range, check_tuple, register,
)


class SOAP(TorchOptimConventions, po.SOAP):
    pass


def build(model: nn.Module, lr, betas, shampoo_beta, weight_decay, precondition_frequency,
          max_precondition_dim, precondition_1d, eps) -> SOAP:
    check_tuple("soap", "betas", betas, "(beta1, beta2)")
    check_common("soap", lr, weight_decay, betas, eps)
    if shampoo_beta is not None:
        check_range("soap", "shampoo_beta", shampoo_beta, 0.0, 1.0)
    for option, value in (("precondition_frequency", precondition_frequency),
                          ("max_precondition_dim", max_precondition_dim)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"optimizer 'soap': {option}={value!r} must be a positive integer")
        check_positive("soap", option, value)
    check_flag("soap", "precondition_1d", precondition_1d)
    refuse_dtensor("soap", trainable(model), "its eigenbases are those of whole matrices")
    return SOAP(decay_groups(model, weight_decay), lr=lr, betas=betas, shampoo_beta=shampoo_beta,
                weight_decay=weight_decay, precondition_frequency=precondition_frequency,
                max_precondition_dim=max_precondition_dim, precondition_1d=precondition_1d,
                merge_dims=False, correct_bias=True, normalize_gradient=False, eps=eps)


def predict_state_bytes(model: nn.Module, max_precondition_dim, precondition_1d, **_) -> int:
    # m and v (the parameter's shape), and per preconditioned dim d a d x d statistic and its
    # d x d eigenbasis, all in the parameter's dtype.
    total = 0
    for p in trainable(model):
        dims = [] if p.dim() == 1 and not precondition_1d else list(p.shape)
        squares = sum(d * d for d in dims if d <= max_precondition_dim)
        total += (2 * p.numel() + 2 * squares) * p.element_size()
    return total


SPEC = register(OptimizerSpec(
    name="soap", build=build, predict_state_bytes=predict_state_bytes,
    defaults=dict(lr=3e-3, betas=(0.95, 0.95), shampoo_beta=None, weight_decay=0.01,
                  precondition_frequency=10, max_precondition_dim=10000, precondition_1d=False,
                  eps=1e-8),
    # Adam-sized steps in a rotated basis: the README's 3e-3 sits where AdamW's best lrs do, so
    # AdamW's range.
    lr_range=(1e-4, 3e-2),
))
