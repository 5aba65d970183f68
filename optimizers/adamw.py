"""AdamW: torch's own, as nanoGPT configures it (decay on tensors with dim >= 2).

Fused on CUDA, foreach on CPU (single-tensor for a tensor lr, which foreach refuses): the same
algebra (torch's single-tensor and foreach paths are bit-identical in fp32 on CPU; the fused
kernel differs by about one ulp per step).
"""

from __future__ import annotations

import torch
from torch import nn

from .grouping import decay_groups, trainable
from .registry import OptimizerSpec, check_common, register


def build(model: nn.Module, lr, betas, eps, weight_decay) -> torch.optim.AdamW:
    check_common("adamw", lr, weight_decay, betas, eps)
    on_cuda = next(model.parameters()).is_cuda
    # torch's foreach AdamW refuses a tensor lr; its single-tensor path takes one and computes
    # the same (bit-identical in fp32 on the CPU), as the fused kernel used on CUDA does.
    foreach = None if on_cuda else not isinstance(lr, torch.Tensor)
    return torch.optim.AdamW(
        decay_groups(model, weight_decay), lr=lr, betas=betas, eps=eps,
        fused=True if on_cuda else None, foreach=foreach,
    )


def predict_state_bytes(model: nn.Module, **_) -> int:
    # exp_avg and exp_avg_sq in the parameter's dtype, plus a 0-d fp32 step per tensor.
    return sum(2 * p.numel() * p.element_size() + 4 for p in trainable(model))


SPEC = register(OptimizerSpec(
    name="adamw", build=build, predict_state_bytes=predict_state_bytes,
    defaults=dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1),
    # nanoGPT's 6e-4 at 124M and Wen et al.'s tuned 8e-3 at 130M (larger batches) lie inside.
    lr_range=(1e-4, 3e-2),
))
