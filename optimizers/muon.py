"""Muon (Jordan et al. 2024, kellerjordan.github.io/posts/muon) as its authors use it: torch's own
`torch.optim.Muon` on the hidden matrices, AdamW (`torch.optim.AdamW`) on everything else.

    B <- mu B + g ;  U = g + mu B (nesterov) ;  O = NewtonSchulz5(U)   (in bfloat16)
    theta <- theta (1 - lr wd) - lr sqrt(max(1, rows / cols)) O

"Hidden matrices" are the parameters with two or more dimensions other than the embeddings and
the output head (here the head is weight-tied to the token embedding): Muon's README sends
"embeddings, classifier heads, and hidden gains/biases" to AdamW. The AdamW part has its own peak
lr (`adamw_lr`), which the training loop schedules like the tuned `lr` (its groups carry
`lr_base`); `lr` is Muon's.

Defaults: Muon's README (KellerJordan/Muon, `MuonWithAuxAdam`): Muon lr 0.02, weight decay 0.01,
momentum 0.95, Nesterov, 5 Newton-Schulz steps; AdamW lr 3e-4, betas (0.9, 0.95), eps 1e-10 (its
muon.py), weight decay 0.01 on every AdamW parameter, gains and biases included, as the README
decays them (not nanoGPT's rule).

Under FSDP2 each rank holds a shard of each matrix, and Newton-Schulz orthogonalises whole
matrices: torch's Muon would orthogonalise the shards one by one, so a sharded model is refused.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .composite import Composite
from .external import refuse_dtensor
from .grouping import trainable
from .registry import (
    OptimizerSpec, check_common, check_flag, check_range, check_tuple, register,
)


def outer_parameters(model: nn.Module) -> set[int]:
    """ids of the embedding tables and the output head (one tensor when tied)."""
    outer = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head = getattr(model, "lm_head", None)
    if head is not None:
        outer.add(id(head.weight))
    return outer


def hidden_matrices(model: nn.Module) -> list[nn.Parameter]:
    outer = outer_parameters(model)
    return [p for p in trainable(model) if p.dim() >= 2 and id(p) not in outer]


def _route(p: torch.Tensor) -> str:
    # A parameter added later has no place in the model to tell: its shape decides.
    return "muon" if p.dim() == 2 else "adamw"


def build(model: nn.Module, lr, momentum, nesterov, ns_steps, weight_decay, adamw_lr,
          adamw_betas, adamw_eps, adamw_weight_decay) -> Composite:
    check_common("muon", lr, weight_decay)
    check_range("muon", "momentum", momentum, 0.0, 1.0)
    check_flag("muon", "nesterov", nesterov)
    if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or not 1 <= ns_steps < 100:
        raise ValueError(f"optimizer 'muon': ns_steps={ns_steps!r} must be an integer in [1, 100)")
    check_range("muon", "adamw_lr", adamw_lr, 0.0, math.inf)
    check_tuple("muon", "adamw_betas", adamw_betas, "(beta1, beta2)")
    for i, beta in enumerate(adamw_betas):
        check_range("muon", f"adamw_betas[{i}]", beta, 0.0, 1.0)
    check_range("muon", "adamw_eps", adamw_eps, 0.0, math.inf)
    check_range("muon", "adamw_weight_decay", adamw_weight_decay, 0.0, math.inf)
    params = trainable(model)
    refuse_dtensor("muon", params, "Newton-Schulz orthogonalises whole matrices, not shards")

    hidden = hidden_matrices(model)
    hidden_ids = {id(p) for p in hidden}
    rest = [p for p in params if id(p) not in hidden_ids]
    muon = torch.optim.Muon(hidden, lr=lr, weight_decay=weight_decay, momentum=momentum,
                            nesterov=nesterov, ns_steps=ns_steps)
    # A tensor lr asks for tensor lrs (a scheduler filling them in place): the AdamW part's too.
    # foreach and fused as in adamw.py.
    on_cuda = params[0].is_cuda
    tensor_lr = isinstance(lr, torch.Tensor)
    adamw = torch.optim.AdamW(
        [{"params": rest, "lr_base": adamw_lr}],
        lr=torch.full_like(lr, adamw_lr) if tensor_lr else adamw_lr, betas=tuple(adamw_betas),
        eps=adamw_eps, weight_decay=adamw_weight_decay,
        fused=True if on_cuda else None, foreach=None if on_cuda else not tensor_lr,
    )
    return Composite({"muon": muon, "adamw": adamw}, route=_route)


def predict_state_bytes(model: nn.Module, **_) -> int:
    # Muon: one momentum buffer per hidden matrix; AdamW: exp_avg, exp_avg_sq and a 0-d fp32
    # step per tensor.
    hidden = {id(p) for p in hidden_matrices(model)}
    return sum(p.numel() * p.element_size() if id(p) in hidden
               else 2 * p.numel() * p.element_size() + 4 for p in trainable(model))


SPEC = register(OptimizerSpec(
    name="muon", build=build, predict_state_bytes=predict_state_bytes,
    defaults=dict(lr=0.02, momentum=0.95, nesterov=True, ns_steps=5, weight_decay=0.01,
                  adamw_lr=3e-4, adamw_betas=(0.9, 0.95), adamw_eps=1e-10,
                  adamw_weight_decay=0.01),
    # The update is orthogonalised (RMS ~ 1/sqrt(cols) per element whatever the gradient), so lr
    # means what it means at every width: a decade either side of the README's 0.02 holds
    # modded-nanogpt's 0.05 at 124M and the small CPU model's best.
    lr_range=(2e-3, 2e-1),
))
