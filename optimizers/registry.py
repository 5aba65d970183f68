"""The optimizer registry: a name -> how to build it, its defaults, and its predicted state size.

Users register their own optimizer with `register(...)` (or from an installed package, through
the `optarena.optimizers` entry points: optimizers/plugins.py); suites then name it like a
built-in. A config's optimizer section may instead name a class or factory by import path
(`_target_`, optimizers/from_config.py): `build`, `resolve_hparams` and `predict_state` take
either, since the section is all a launcher's worker gets.
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
    # predict_state_bytes(model, **hparams) -> int, from shapes alone (no step taken). None: found
    # by stepping a copy of the model with the shapes alone (optimizers/state_prediction.py).
    predict_state_bytes: Callable[..., int] | None = None
    # Every option the optimizer accepts, with its default; anything else is rejected.
    defaults: dict[str, Any] = field(default_factory=dict)
    # Options it takes without a default (a config class's required arguments, e.g. its lr).
    required: tuple[str, ...] = ()
    # Whether it takes options it does not name (a class with **kwargs): building it checks them.
    open: bool = False
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
    try:
        lr_range = lr_range_of(spec.lr_range, spec.defaults["lr"])
    except ValueError as e:
        raise ValueError(f"optimizer {spec.name!r}: {e}") from None
    if lr_range is None:
        raise ValueError(f"optimizer {spec.name!r}: lr_range=None must be (lo, hi) with 0 < lo < hi "
                         "< inf when the default lr is not a number")
    spec = dataclasses.replace(spec, lr_range=lr_range)
    _REGISTRY[spec.name] = spec
    return spec


def lr_range_of(given, lr) -> tuple[float, float] | None:
    """`given` checked as (lo, hi), or a decade either side of lr (of a grid's ends, for a list);
    None when neither says (lr: tuned)."""
    grid = lr if isinstance(lr, (list, tuple)) else [lr]
    lr_range = given
    if given is None and grid and all(_is_number(v) and v > 0 for v in grid):
        lr_range = (min(grid) / 10, max(grid) * 10)
    if given is None and lr_range is None:
        return None
    if not (isinstance(lr_range, (tuple, list)) and len(lr_range) == 2
            and all(map(_is_number, lr_range)) and 0 < lr_range[0] < lr_range[1] < math.inf):
        raise ValueError(f"lr_range={given!r} must be (lo, hi) with 0 < lo < hi < inf")
    return float(lr_range[0]), float(lr_range[1])


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


def spec_of(section: dict) -> OptimizerSpec:
    """The spec of a config's optimizer section: {name, **hparams} names a registered optimizer;
    with a `_target_` key it is an optimizer from config alone (optimizers/from_config.py)."""
    if "_target_" not in section:
        return spec(section.get("name"))
    from . import from_config  # it builds on this module

    return from_config.spec(section)


def options(s: OptimizerSpec) -> list[str]:
    return [*s.defaults, *s.required]


def accepts(s: OptimizerSpec, option: str) -> bool:
    return s.open or option in s.defaults or option in s.required


def _resolve(name: str, hparams: dict) -> tuple[OptimizerSpec, dict, dict]:
    """(spec, what the section says of the spec itself, the hyper-parameters to build with)."""
    s = spec_of({"name": name, **hparams})
    own: dict = {}
    if "_target_" in hparams:
        from . import from_config

        own, hparams = from_config.split(hparams)
    unknown = sorted(k for k in hparams if not accepts(s, k))
    if unknown:
        raise ValueError(
            f"optimizer {name!r}: unknown option(s) {unknown}; it accepts {sorted(options(s))}"
        )
    merged = {**s.defaults, **hparams}
    if "betas" in merged and merged["betas"] is not None:
        if not isinstance(merged["betas"], (list, tuple)):
            raise ValueError(f"optimizer {name!r}: betas={merged['betas']!r} must be a list of numbers")
        merged["betas"] = tuple(merged["betas"])
    return s, own, merged


def resolve_hparams(name: str, **hparams) -> dict[str, Any]:
    """The defaults overlaid with `hparams`, after rejecting options the optimizer does not know;
    for an optimizer from config, its `_target_` and `param_groups` first (what a run records)."""
    _, own, merged = _resolve(name, hparams)
    return {**own, **merged}


def build(name: str, model: nn.Module, **hparams) -> torch.optim.Optimizer:
    s, _, merged = _resolve(name, hparams)
    return s.build(model, **merged)


def predict_state(name: str, model: nn.Module, **hparams) -> tuple[int, str | None]:
    """(state bytes, how they were found): None for an optimizer's own count from the shapes,
    else which copy of the model one step was taken on (state_prediction.py)."""
    s, own, merged = _resolve(name, hparams)
    if s.predict_state_bytes is not None:
        return s.predict_state_bytes(model, **merged), None
    from .state_prediction import by_stepping  # it counts with state_bytes, below

    return by_stepping(lambda m: s.build(m, **merged), model, key=(s.name, own, merged))


def predict_state_bytes(name: str, model: nn.Module, **hparams) -> int:
    return predict_state(name, model, **hparams)[0]


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
