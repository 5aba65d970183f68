"""The optimizer registry: a name -> how to build it, its defaults, and its predicted state size.

Users register their own optimizer with `register(...)`; suites then name it like a built-in.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .base import local


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    # build(model, **hparams) -> Optimizer; hparams are the defaults overlaid with the user's.
    build: Callable[..., torch.optim.Optimizer]
    # predict_state_bytes(model, **hparams) -> int, from shapes alone (no step taken).
    predict_state_bytes: Callable[..., int]
    # Every option the optimizer accepts, with its default; anything else is rejected.
    defaults: dict[str, Any] = field(default_factory=dict)
    # Options derived from the run's budget (e.g. AdEMAMix's warmups), filled in by the runner.
    budget_options: tuple[str, ...] = ()
    # (lo, hi): where a tuner searches lr, log-uniformly, at GPT-2-like scales. None: a decade
    # either side of the default lr, filled in by register().
    lr_range: tuple[float, float] | None = None


_REGISTRY: dict[str, OptimizerSpec] = {}


def register(spec: OptimizerSpec) -> OptimizerSpec:
    """Register `spec` under its name; returns it as registered (lr_range filled in)."""
    if "lr" not in spec.defaults:
        raise ValueError(f"optimizer {spec.name!r}: defaults must include lr")
    lr_range = spec.lr_range
    if lr_range is None and _is_number(spec.defaults["lr"]):
        lr_range = (spec.defaults["lr"] / 10, spec.defaults["lr"] * 10)
    if not (isinstance(lr_range, (tuple, list)) and len(lr_range) == 2
            and all(map(_is_number, lr_range)) and 0 < lr_range[0] < lr_range[1] < math.inf):
        raise ValueError(f"optimizer {spec.name!r}: lr_range={spec.lr_range!r} must be (lo, hi) "
                         "with 0 < lo < hi < inf")
    spec = dataclasses.replace(spec, lr_range=(float(lr_range[0]), float(lr_range[1])))
    _REGISTRY[spec.name] = spec
    return spec


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def names() -> list[str]:
    return list(_REGISTRY)


def spec(name: str) -> OptimizerSpec:
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown optimizer {name!r}: choose one of {', '.join(_REGISTRY)}"
            " or register your own with optimizers.register()"
        )
    return _REGISTRY[name]


def resolve_hparams(name: str, **hparams) -> dict[str, Any]:
    """The defaults overlaid with `hparams`, after rejecting options the optimizer does not know."""
    s = spec(name)
    unknown = sorted(set(hparams) - set(s.defaults))
    if unknown:
        raise ValueError(
            f"optimizer {name!r}: unknown option(s) {unknown}; it accepts {sorted(s.defaults)}"
        )
    merged = {**s.defaults, **hparams}
    if "betas" in merged and merged["betas"] is not None:
        if not isinstance(merged["betas"], (list, tuple)):
            raise ValueError(f"optimizer {name!r}: betas={merged['betas']!r} must be a list of numbers")
        merged["betas"] = tuple(merged["betas"])
    return merged


def build(name: str, model: nn.Module, **hparams) -> torch.optim.Optimizer:
    return spec(name).build(model, **resolve_hparams(name, **hparams))


def predict_state_bytes(name: str, model: nn.Module, **hparams) -> int:
    return spec(name).predict_state_bytes(model, **resolve_hparams(name, **hparams))


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of every tensor the optimizer holds in its state, on this rank, lists and dicts
    of tensors included (SOAP keeps a list of preconditioners per parameter)."""
    return sum(_tensor_bytes(per_param) for per_param in opt.state.values())


def _tensor_bytes(value) -> int:
    if isinstance(value, torch.Tensor):
        shard = local(value)
        return shard.numel() * shard.element_size()
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, (list, tuple)):
        return 0
    return sum(_tensor_bytes(v) for v in value)


def check_range(opt: str, param: str, value: float, lo: float, hi: float, hi_open: bool = True):
    """Raise a ValueError naming the optimizer and the parameter when value is outside [lo, hi)."""
    ok = lo <= value < hi if hi_open else lo <= value <= hi
    if not (ok and math.isfinite(value)):
        bracket = ")" if hi_open else "]"
        raise ValueError(f"optimizer {opt!r}: {param}={value!r} is outside [{lo}, {hi}{bracket}")


def check_common(opt: str, lr, weight_decay: float = 0.0, betas=(), eps=None) -> None:
    if isinstance(lr, torch.Tensor):  # torch.optim's one-element tensor lr (see base.group_lr)
        if lr.numel() != 1:
            raise ValueError(f"optimizer {opt!r}: lr must be a number or a one-element tensor, "
                             f"not a tensor of shape {list(lr.shape)}")
        lr = lr.item()
    check_range(opt, "lr", lr, 0.0, math.inf)
    check_range(opt, "weight_decay", weight_decay, 0.0, math.inf)
    for i, beta in enumerate(betas):
        if beta is not None:
            check_range(opt, f"betas[{i}]", beta, 0.0, 1.0)
    for e in eps if isinstance(eps, (tuple, list)) else [eps]:
        if e is not None:
            check_range(opt, "eps", e, 0.0, math.inf)


def check_positive(opt: str, param: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"optimizer {opt!r}: {param}={value!r} must be a finite number > 0")


def check_tuple(opt: str, param: str, value, names: str) -> None:
    """value must be a tuple or list with one entry per name in `names` (e.g. "(eps1, eps2)")."""
    if not (isinstance(value, (tuple, list)) and len(value) == names.count(",") + 1):
        raise ValueError(f"optimizer {opt!r}: {param}={value!r} must be {names}")


def check_flag(opt: str, param: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"optimizer {opt!r}: {param}={value!r} must be true or false")
