"""Which parameters get weight decay.

nanoGPT's rule, used by every optimizer here except Adam-mini (which follows its reference):
tensors with two or more dimensions (matmul weights and embeddings) decay, biases and norm
weights do not.
"""

from __future__ import annotations

from torch import nn

from .base import local


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def trainable(model: nn.Module) -> list:
    return [p for p in model.parameters() if p.requires_grad]


def two_moments_bytes(model: nn.Module) -> int:
    """Two state tensors the shape and dtype of each parameter's shard on this rank (Adam-like
    m and v; the whole tensor without FSDP), with no per-tensor step."""
    return sum(2 * local(p).numel() * p.element_size() for p in trainable(model))

