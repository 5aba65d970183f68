"""Optimizer state bytes with no hand-written count: one step on a copy of the model with the
same shapes, dtypes and ties, counted as the run counts it (registry.state_bytes).

The copy lives on the meta device first: tensors with shapes and no data, so that a 1.5B model
costs what a nano one does. An optimizer whose step reads values (`.item()`, a branch on a norm)
cannot step there; then a real copy on the CPU takes the step, when it fits in the free memory.
The gradients are a constant, so every call finds the same count; it is kept per (optimizer,
hyper-parameters, model shapes), so that a plan of many runs steps each kind once.
"""

from __future__ import annotations

import copy
import json
from typing import Callable

import psutil
import torch
from torch import nn

from .contract import set_mode
from .grouping import trainable
from .registry import state_bytes

_found: dict[str, tuple[int, str]] = {}


def by_stepping(build: Callable[[nn.Module], torch.optim.Optimizer], model: nn.Module,
                key) -> tuple[int, str]:
    """(state bytes after one step of `build(copy of model)`, how they were found); `key` names
    the optimizer and its hyper-parameters (JSON-able)."""
    shapes = [(n, list(p.shape), str(p.dtype), p.requires_grad) for n, p in model.named_parameters()]
    cache_key = json.dumps([key, shapes], sort_keys=True, default=str)
    if cache_key not in _found:
        _found[cache_key] = _predict(build, model)
    return _found[cache_key]


def _predict(build, model: nn.Module) -> tuple[int, str]:
    try:
        return _after_one_step(build, _copy(model, "meta")), "one step on the meta device"
    except Exception as e:  # the optimizer's own code: whatever it raises, the CPU is tried next
        on_meta = _why(e)
    # the weights, their gradients and (at least) as much state again, with room to spare
    need = 3 * sum(p.numel() * p.element_size() for p in model.parameters())
    if 2 * need > psutil.virtual_memory().available:
        return 0, (f"unknown: no step on the meta device ({on_meta}), and a real one on the CPU needs "
                   f"about {need / 2**30:.1f} GiB, more than half the free memory")
    try:
        return (_after_one_step(build, _copy(model, "cpu")),
                f"one real step on the CPU (none on the meta device: {on_meta})")
    except Exception as e:
        return 0, f"unknown: no step on the meta device ({on_meta}) nor on the CPU ({_why(e)})"


def _copy(model: nn.Module, device: str) -> nn.Module:
    """`model` with zeros on `device` for every parameter and buffer; tied tensors stay tied
    (deepcopy's memo hands out one replacement per original)."""
    memo = {}
    for t in [*model.parameters(), *model.buffers()]:
        zeros = torch.zeros_like(t, device=device)
        memo[id(t)] = nn.Parameter(zeros, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else zeros
    return copy.deepcopy(model, memo)


def _after_one_step(build, model: nn.Module) -> int:
    opt = build(model)
    set_mode(opt, "train")  # as the loop does before its first step (Schedule-Free asks for it)
    for p in trainable(model):
        p.grad = torch.full_like(p, 1e-3)
    opt.step()
    return state_bytes(opt)


def _why(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
