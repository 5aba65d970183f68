"""Optimizers from config alone: an optimizer section with a `_target_` (Hydra's convention).

    optimizers:
      my_lion:
        _target_: mypkg.optim.Lion      # a class: Lion(param_groups, **hparams)
        lr: 3e-4                         # required; a number, a list (a grid) or tuned
        betas: [0.9, 0.99]               # any other key: a hyper-parameter of the class
        param_groups: decay              # how the parameters are grouped (below); decay if absent
        lr_range: [1e-5, 1e-3]           # the tuner's search range; a decade either side of lr if absent

A `_target_` that is a function instead of a class is a factory, `build(model, **hparams)`, that
returns the optimizer and groups the parameters itself (so it takes no `param_groups`).

Grouping rules (`param_groups`):
  decay       nanoGPT's rule (optimizers/grouping.py): the optimizer's weight_decay on tensors of two
              or more dimensions (matmul weights, embeddings), none on biases and norm weights
  no_decay    every parameter in one group with weight_decay 0
  muon_style  the hidden matrices (optimizers/muon.py) to this optimizer; embeddings, head, norms and
              biases to torch's AdamW, whose options are given as
              {rule: muon_style, adamw: {lr, betas, eps, weight_decay}} (Muon's README values if absent);
              its group carries `lr_base`, so the loop schedules it from its own peak
  {_target_: pkg.fn, ...}   fn(model, **the other keys) -> param groups, as torch.optim takes them

The class's own defaults (those of plain values: numbers, flags, strings, lists of them) join the
config's hyper-parameters in the run's record, as a built-in's do.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import torch
from torch import nn

from .composite import Composite
from .grouping import decay_groups, trainable
from .muon import SPEC as MUON, hidden_matrices
from .registry import OptimizerSpec, lr_range_of

# Keys of a section that say which optimizer and how it is set up, not options handed to it.
SPEC_KEYS = ("_target_", "param_groups", "lr_range")
RULES = ("decay", "no_decay", "muon_style")
ADAMW_OPTIONS = {k: MUON.defaults[f"adamw_{k}"] for k in ("lr", "betas", "eps", "weight_decay")}
_UNSET = object()


class SpecError(ValueError):
    """A problem with one key of an optimizer section; the message starts with that key (relative
    to the section), so that the caller puts `optimizers.NAME.` or `optimizer.` before it."""

    def __init__(self, key: str, why: str, value=_UNSET):
        shown = "" if value is _UNSET else "=" + (value if isinstance(value, str) else json.dumps(value, default=str))
        super().__init__(f"{key}{shown}: {why}")


@dataclass(frozen=True)
class Target:
    path: str
    obj: Callable
    is_class: bool
    defaults: dict[str, Any]
    required: tuple[str, ...]
    open: bool


def split(section: dict) -> tuple[dict, dict]:
    """(the spec keys, normalized as a run records them; the hyper-parameters)."""
    own = {"_target_": section["_target_"]}
    if locate(section["_target_"]).is_class:  # a factory groups the parameters itself
        own["param_groups"] = _grouping(section.get("param_groups"))
    return own, {k: v for k, v in section.items() if k not in (*SPEC_KEYS, "name")}


def spec(section: dict) -> OptimizerSpec:
    """The spec of a `_target_` section, every key checked but the hyper-parameters' values (which
    building it checks); SpecError names the key."""
    target = locate(section["_target_"])
    if "lr" not in section:
        raise SpecError("lr", "missing: give the peak lr (a number, a list of them for a grid, or tuned)")
    grouping = _grouping(section.get("param_groups"))
    if not target.is_class and "param_groups" in section:
        raise SpecError("param_groups", f"{target.path} is a factory, which groups the parameters "
                        "itself: only a class (built as Class(param_groups, **hparams)) takes param_groups",
                        section["param_groups"])
    try:
        lr_range = lr_range_of(section.get("lr_range"), section["lr"])
    except ValueError:
        raise SpecError("lr_range", "give [lo, hi] with 0 < lo < hi", section["lr_range"]) from None
    return OptimizerSpec(
        name=target.path, build=lambda model, **hp: _build(target, grouping, model, hp),
        defaults=target.defaults, required=target.required, open=target.open, lr_range=lr_range)


def locate(path) -> Target:
    """The class or factory at `path`, imported once per process; SpecError says why not."""
    if not isinstance(path, str):
        raise SpecError("_target_", "give the import path of a class or function, package.module.Name", path)
    return _locate(path)


@lru_cache(maxsize=None)
def _locate(path: str) -> Target:
    obj = _import(path, "_target_")
    if not callable(obj):
        raise SpecError("_target_", f"{type(obj).__name__} is neither a class nor a function", path)
    is_class = inspect.isclass(obj)
    try:
        params = list(inspect.signature(obj).parameters.values())
    except (TypeError, ValueError):  # no signature to read (a C extension): building checks it all
        return Target(path, obj, is_class, {}, (), True)
    first = "param_groups" if is_class else "model"
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        raise SpecError("_target_", f"takes no {first} argument first: a class is built as "
                        "Class(param_groups, **hparams), a factory as build(model, **hparams)", path)
    named = [p for p in params[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    # Defaults that are not plain values (objects, callables) stay out of the run's record.
    defaults = {p.name: _listed(p.default) for p in named if p.default is not p.empty and _plain(p.default)}
    required = tuple(p.name for p in named if p.default is p.empty)
    return Target(path, obj, is_class, defaults, required, any(p.kind == p.VAR_KEYWORD for p in params))


def _import(path, key: str):
    if not (isinstance(path, str) and "." in path and all(part.isidentifier() for part in path.split("."))):
        raise SpecError(key, "give the import path of a class or function, package.module.Name", path)
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module)
            break
        except ModuleNotFoundError as e:
            if not (module + ".").startswith(f"{e.name}."):  # something the module imports is missing
                raise SpecError(key, f"cannot import {module}: {e}", path) from None
        except Exception as e:  # the user's module failed while it ran
            raise SpecError(key, f"cannot import {module}: {type(e).__name__}: {e}", path) from None
    else:
        raise SpecError(key, f"cannot import {parts[0]}: no module named {parts[0]!r}; put the folder "
                        "that holds it on PYTHONPATH, or install its package", path)
    for depth, attr in enumerate(parts[i:], i):
        if not hasattr(obj, attr):
            where = ".".join(parts[:depth])
            close = difflib.get_close_matches(attr, [a for a in dir(obj) if not a.startswith("_")], n=1)
            raise SpecError(key, f"cannot import {path}: {where} has no {attr}"
                            + (f" (did you mean {where}.{close[0]}?)" if close else ""), path)
        obj = getattr(obj, attr)
    return obj


def _plain(v) -> bool:
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    return isinstance(v, (list, tuple)) and all(_plain(x) for x in v)


def _listed(v):
    """Tuples as lists: what a run's config.yaml (safe YAML) and JSON hold."""
    return [_listed(x) for x in v] if isinstance(v, (list, tuple)) else v


def _tupled(v):
    """Lists as tuples, as torch.optim takes betas and the like."""
    return tuple(_tupled(x) for x in v) if isinstance(v, (list, tuple)) else v


# ---------------------------------------------------------------- grouping

def _grouping(value) -> str | dict:
    """`param_groups` normalized: a rule's name, {rule: muon_style, adamw: {...}} with every AdamW
    option, or {_target_: pkg.fn, ...}; SpecError for anything else."""
    if value is None:
        return "decay"
    rule, options = (value, {}) if isinstance(value, str) else (None, value)
    if isinstance(options, dict) and "_target_" in options:
        _import(options["_target_"], "param_groups._target_")
        return options
    if isinstance(options, dict) and rule is None:
        rule, options = options.get("rule"), {k: v for k, v in options.items() if k != "rule"}
    if rule not in RULES:
        close = difflib.get_close_matches(str(rule), RULES, n=1)
        raise SpecError("param_groups", f"choose one of {', '.join(RULES)}, or {{_target_: pkg.fn}} "
                        "for fn(model) -> param groups" + (f" (did you mean {close[0]}?)" if close else ""),
                        value)
    if rule != "muon_style":
        if options:
            raise SpecError("param_groups", f"the {rule} rule takes no options", value)
        return rule
    adamw = options.get("adamw", {})
    unknown = sorted(set(options) - {"adamw"}) + sorted(set(adamw) - set(ADAMW_OPTIONS) if isinstance(adamw, dict) else [])
    if not isinstance(adamw, dict) or unknown:
        raise SpecError("param_groups", "muon_style takes {adamw: {" + ", ".join(ADAMW_OPTIONS) + "}}"
                        + (f", not {', '.join(unknown)}" if unknown else ""), value)
    return {"rule": "muon_style", "adamw": {**_listed(ADAMW_OPTIONS), **adamw}}


def _build(target: Target, grouping, model: nn.Module, hparams: dict):
    hp = {k: _tupled(v) for k, v in hparams.items()}
    if not target.is_class:
        opt = target.obj(model, **hp)
        missing = [a for a in ("step", "zero_grad", "param_groups", "state", "state_dict", "load_state_dict")
                   if not hasattr(opt, a)]
        if missing:
            raise TypeError(f"{target.path} returned {type(opt).__name__}, not an optimizer (it has no "
                            f"{', '.join(missing)}): a factory returns a torch.optim.Optimizer or alike")
        return opt
    if grouping == "decay":
        return target.obj(decay_groups(model, hp.get("weight_decay", 0.0)), **hp)
    if grouping == "no_decay":
        return target.obj([{"params": trainable(model), "weight_decay": 0.0}], **hp)
    if grouping.get("rule") == "muon_style":
        return _muon_style(target.obj, model, hp, grouping["adamw"])
    fn = _import(grouping["_target_"], "param_groups._target_")
    return target.obj(fn(model, **{k: v for k, v in grouping.items() if k != "_target_"}), **hp)


HIDDEN = "hidden"


def _route(p: torch.Tensor) -> str:
    # A parameter added later has no place in the model to tell: its shape decides (as Muon's).
    return HIDDEN if p.dim() == 2 else "adamw"


def _muon_style(cls, model: nn.Module, hp: dict, adamw: dict) -> Composite:
    hidden = hidden_matrices(model)
    ids = {id(p) for p in hidden}
    rest = [p for p in trainable(model) if id(p) not in ids]
    aux = torch.optim.AdamW([{"params": rest, "lr_base": adamw["lr"]}], lr=adamw["lr"],
                            betas=tuple(adamw["betas"]), eps=adamw["eps"], weight_decay=adamw["weight_decay"])
    return Composite({HIDDEN: cls(hidden, **hp), "adamw": aux}, route=_route)
