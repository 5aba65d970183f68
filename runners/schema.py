"""The config's schema: every key of every section, the values it takes, and one line of help.

`check(cfg)` walks a composed config (a plain dict) against it and returns one message per
problem, each naming the key and the fix; it never stops at the first. Unknown keys get the
nearest known one. Values are checked for type and range, NaN and infinity included; a count
may be written as an integral float (`budget.steps=1e3`). The defaults live in the YAML files
of suites/ (Hydra's convention); this module only says what is valid.

Optimizer hyper-parameters are checked here for their kind only (a number, a flag, a list of so
many numbers), from the registry's defaults (or, for an optimizer named by `_target_`, its class's
signature); their ranges stay with each optimizer.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optimizers
from models import PRESETS
from runners import compiled_step

# Seeds per arm above this are almost surely a typo (and resolving them takes minutes).
MAX_SEEDS = 1000


class Bad(ValueError):
    """A value outside its key's domain; the message is what to write instead."""


@dataclass(frozen=True)
class Key:
    check: Callable[[Any], Any]  # returns the (normalized) value or raises Bad
    doc: str


# ---------------------------------------------------------------------------- value kinds


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def number(lo: float = -math.inf, hi: float = math.inf, *, lo_open=False, hi_open=False,
           null: str | None = None, doc: str = "") -> Key:
    """A finite number in a range; `null` (when given) says what null means."""
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    want = ("a number" if lo == -math.inf and hi == math.inf else
            f"a number > {lo:g}" if hi == math.inf and lo_open else
            f"a number >= {lo:g}" if hi == math.inf else f"a number in {left}{lo:g}, {hi:g}{right}")
    want += f", or null for {null}" if null else ""

    def check(v):
        if v is None and null:
            return None
        if not _is_number(v) or not math.isfinite(v):
            raise Bad(f"must be {want}")
        if v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
            raise Bad(f"must be {want}")
        return v

    return Key(check, doc)


def integer(lo: int = 0, *, null: str | None = None, doc: str = "") -> Key:
    want = f"an integer >= {lo}" + (f", or null for {null}" if null else "")

    def check(v):
        if v is None and null:
            return None
        if _is_number(v) and math.isfinite(v) and float(v).is_integer() and v >= lo:
            return int(v)
        raise Bad(f"must be {want}")

    return Key(check, doc)


def choice(*options: str, doc: str = "", fold_case: bool = False) -> Key:
    def check(v):
        got = v.lower() if fold_case and isinstance(v, str) else v
        if got in options:
            return got
        raise Bad(f"choose one of {', '.join(options)}" + did_you_mean(v, options))

    return Key(check, doc)


def flag(doc: str = "") -> Key:
    def check(v):
        if isinstance(v, bool):
            return v
        raise Bad("must be true or false")

    return Key(check, doc)


def text(*, null: str | None = None, doc: str = "") -> Key:
    def check(v):
        if v is None and null:
            return None
        if isinstance(v, str) and v:
            return v
        raise Bad("must be a non-empty string" + (f", or null for {null}" if null else ""))

    return Key(check, doc)


def names(doc: str = "") -> Key:
    def check(v):
        if isinstance(v, list) and all(isinstance(s, str) and s for s in v):
            return v
        raise Bad("must be a list of strings, e.g. [a, b]")

    return Key(check, doc)


def mapping(doc: str = "") -> Key:
    """Free-form: its keys are the user's (sbatch options, hyper-parameters)."""
    def check(v):
        if isinstance(v, dict):
            return v
        raise Bad("must be a mapping, e.g. {key: value}")

    return Key(check, doc)


def anything(doc: str = "") -> Key:
    """Checked where it is used (the suite's optimizers, models, seeds; tune's ranges)."""
    return Key(lambda v: v, doc)


def _device(v):
    if v in ("auto", "cpu", "cuda") or (isinstance(v, str) and v.startswith("cuda:")
                                         and v[5:].isascii() and v[5:].isdigit()):
        return v
    raise Bad("choose auto, cpu, cuda or cuda:N" + did_you_mean(v, ("auto", "cpu", "cuda")))


def _folder_name(v):
    if isinstance(v, str) and v and v not in (".", "..") and "/" not in v and v.isprintable():
        return v
    raise Bad("must be a folder name (no '/'), e.g. my_suite")


def _writable_dir(v):
    """A folder that exists or can be made, found without making anything."""
    if not isinstance(v, str) or not v:
        raise Bad("must be a folder path")
    p = Path(v).absolute()
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        raise Bad(f"cannot be made: {p} is not a folder; choose a folder you can write to")
    if not os.access(p, os.W_OK | os.X_OK):
        raise Bad(f"cannot be made: {p} is not writable; choose a folder you can write to")
    return v


def _warmup(v):
    if _is_number(v) and isinstance(v, int) and v >= 0:
        return v
    if isinstance(v, float) and math.isfinite(v) and 0 <= v < 1:
        return v
    raise Bad("must be steps (an integer >= 0) or a fraction in [0, 1)")


def _micro_batch(v):
    if v is None or v == "auto":
        return v
    try:
        return integer(1).check(v)
    except Bad:
        raise Bad("must be an integer >= 1, auto (the largest that fits: runners/plan.py), or null for "
                  "the whole per-rank batch") from None


def _steps(v):
    if isinstance(v, list) and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in v):
        return v
    raise Bad("give a list of steps, e.g. [20, 40]")


def _fractions(v):
    if v is None:
        return []
    if isinstance(v, list) and all(_is_number(f) and 0 < f < 1 for f in v) and len(set(v)) == len(v):
        return [float(f) for f in v]
    raise Bad("give distinct fractions of the budget between 0 and 1, e.g. [0.25, 0.5]")


def _branch(v):
    if v is None or (isinstance(v, dict) and set(v) == {"parent", "from_step"}
                     and isinstance(v["parent"], str) and isinstance(v["from_step"], int)):
        return v
    raise Bad("a cooldown branch is {parent: RUN_ID, from_step: N} (made by a suite's branches)")


LR_SOURCES = ("default", "shared", "grid", "tuned")  # how an arm got its lr (analysis/compare.py)


def _baseline(v):
    """null, an optimizer's name, or {optimizer: NAME, lr: SOURCE}: the arm the report compares with."""
    if v is None:
        return None
    if isinstance(v, str):
        v = {"optimizer": v}
    if isinstance(v, dict) and isinstance(v.get("optimizer"), str) and set(v) <= {"optimizer", "lr"}:
        if v.get("lr") in (None, *LR_SOURCES):
            return {k: x for k, x in v.items() if x is not None}
        raise Bad(f"lr={show(v['lr'])}: choose one of {', '.join(LR_SOURCES)}" + did_you_mean(v["lr"], LR_SOURCES))
    raise Bad("give an optimizer's name, or {optimizer: NAME, lr: default|shared|grid|tuned}")


def _plan_device(v):
    from runners.plan import DEVICES

    return choice("auto", "cpu", "cuda", *DEVICES, fold_case=True).check(v)


def _tokens_per_param(v):
    if v is None:
        return None
    if (isinstance(v, list) and v and all(_is_number(t) and math.isfinite(t) and t > 0 for t in v)
            and len(set(v)) == len(v)):
        return [float(t) for t in v]
    raise Bad("give distinct positive numbers of training tokens per model parameter, e.g. [5, 10, 20], "
              "or null for one budget")


TARGET_KEYS = {"params", "model", "tokens", "device", "world_size"}


def _target(v):
    """null, or the scale a ladder's trend is extrapolated to: {params: N or model: PRESET, tokens: D,
    device: a runners/plan.py DEVICES key, world_size: ranks (default 1)}; written whole, with
    both params and model (null when not named), e.g. {model: null, params: 1.5e9, ...}."""
    from runners.plan import DEVICES

    if v is None:
        return None
    if not isinstance(v, dict) or set(v) - TARGET_KEYS:
        extra = f" (not {', '.join(sorted(set(v) - TARGET_KEYS))})" if isinstance(v, dict) else ""
        raise Bad(f"give {{params: 1.5e9, tokens: 3e10, device: h100}}, or model: NAME instead of params; "
                  f"optionally world_size{extra}")
    if ("params" in v) == ("model" in v):
        raise Bad("give one of params (e.g. params: 1.5e9) and model (a preset, e.g. model: gpt2_xl)")
    if "model" in v and v["model"] not in PRESETS:
        raise Bad(f"model={show(v['model'])}: choose one of {', '.join(PRESETS)}" + did_you_mean(v["model"], PRESETS))
    out = {"model": v.get("model"), "params": _part(v, "params", number(1)) if "params" in v
           else _preset_params(v["model"]), "tokens": _part(v, "tokens", number(0, lo_open=True))}
    device = v.get("device")
    if not isinstance(device, str) or device.lower() not in DEVICES:
        raise Bad(f"device={show(device)}: choose one of {', '.join(DEVICES)} (runners/plan.py)"
                  + did_you_mean(device, DEVICES))
    out["device"] = device.lower()
    out["world_size"] = _part({"world_size": 1, **v}, "world_size", integer(1))
    return out


def _part(v: dict, key: str, kind: Key):
    try:
        return kind.check(v.get(key))
    except Bad as e:
        raise Bad(f"{key}={show(v.get(key))}: {e}") from None


def _preset_params(model: str) -> int:
    from runners.ladder import params

    return params({"name": model})


def _extrapolation_limit(v):
    if v is None or (_is_number(v) and math.isfinite(v) and v >= 1):
        return v
    raise Bad("give a factor >= 1 in parameters beyond the largest model of the ladder (default 1000), "
              "or null for no limit")


# ---------------------------------------------------------------------------- sections

SUITE = {
    "suite": Key(_folder_name, "results go to <results_dir>/<suite>/"),
    "seed": integer(0, doc="initial weights and data order of a single run"),
    "results_dir": Key(_writable_dir, "where run folders go"),
    "optimizers": anything("a list of names, a mapping name -> hyper-parameters, or all"),
    "optimizer_defaults": mapping("hyper-parameters for every optimizer that accepts them"),
    "models": anything("a list of model presets; null: the model group's"),
    "seeds": anything("a list of seeds, or a count N for 0..N-1; null: [seed]"),
    "only": anything("run just these optimizers of the suite"),
    "force": flag("start even when the plan says this device is far too slow"),
    "plan": flag("print the plan (runs, status, time, memory) and run nothing"),
    "status": flag("print each run's status, progress, last losses and time left; run nothing"),
    "plan_device": Key(_plan_device, "auto | cpu | cuda | h100 | h200 | a100 | ... (runners/plan.py)"),
    "report": flag("write results/<suite>/report.html when the suite ends"),
    "workers": integer(1, doc="runs at once with launcher=local: processes of cores / N threads each"),
    "branches": Key(_fractions, "fractions of the budget at which a wsd run branches into cooldowns"),
    "tokens_per_param": Key(_tokens_per_param, "a ladder: each model's budgets in tokens per parameter, e.g. "
                            "[5, 10, 20] (the largest a wsd run, the others its cooldown branches)"),
    "target": Key(_target, "the scale to extrapolate a ladder to: {params: N or model: NAME, tokens: D, "
                           "device: h100, world_size: 1}"),
    "extrapolation_limit": Key(_extrapolation_limit, "the factor in parameters beyond the largest model past "
                                                     "which the prediction at target is refused; null: none"),
    "cosine_check": flag("with branches: also a cosine run of each branch's budget, seed and lr, which the "
                         "report holds the branch against"),
    "baseline": Key(_baseline, "the arm the report compares with: NAME or {optimizer: NAME, lr: SOURCE}; "
                               "null: adamw"),
}

# Top-level keys of a run's config that a suite derives, never set by hand.
RUN_ONLY = {"branch": Key(_branch, "the run a cooldown branch starts from (made by a suite's branches)")}

SECTIONS: dict[str, dict[str, Key]] = {
    "budget": {
        "tokens": number(0, lo_open=True, null="budget.steps instead", doc="training tokens"),
        "steps": integer(1, null="budget.tokens instead", doc="optimizer steps (or tokens)"),
        "seq_len": integer(1, doc="tokens per sequence"),
        "global_batch": integer(1, doc="sequences per optimizer step, across ranks and micro-batches"),
        "schedule": choice("cosine", "constant", "wsd", doc="the lr schedule"),
        "cooldown": number(0, 1, lo_open=True, hi_open=True, doc="wsd: the share of the run that cools down"),
        "cooldown_shape": choice("linear", "1-sqrt", doc="wsd: how the lr cools down to the minimum"),
        "warmup": Key(_warmup, "warmup steps (int) or a fraction of the run (float)"),
        "min_lr_ratio": number(0, 1, doc="final lr / peak lr"),
        "grad_clip": number(0, lo_open=True, null="no clipping", doc="global gradient-norm clip"),
        "eval_every": integer(1, doc="steps between evaluations"),
        "diverge_factor": number(1, lo_open=True, doc="train loss above this x the first ends the run"),
    },
    "data": {
        "name": text(doc="shakespeare_bytes | shakespeare_gpt2 | openwebtext, or your own with path"),
        "path": text(null="data/<name>", doc="a folder with nanoGPT's train.bin/val.bin"),
        "seed": integer(0, null="the run's seed", doc="the data order: batches are a function of (data seed, step)"),
        "val_tokens": integer(1, doc="the validation set (tuning, curves): the first tokens of val.bin"),
        "test_tokens": integer(1, doc="the held-out test set (final comparison): the last tokens of val.bin"),
    },
    "train": {
        "device": Key(_device, "auto | cpu | cuda | cuda:N"),
        "dtype": choice("auto", "float32", "bfloat16", doc="auto: bf16 autocast on CUDA, fp32 on CPU"),
        "compile": flag("torch.compile the model"),
        "compile_step": flag("torch.compile the optimizer's step (runners/compiled_step.py: which take it)"),
        "micro_batch": Key(_micro_batch, "sequences per forward pass on each rank; auto: the largest that "
                                         "divides the per-rank batch and fits in memory; null: the whole per-rank batch"),
        "memory_limit_gib": number(0, lo_open=True, null="the device's memory",
                                   doc="memory per rank that micro_batch=auto fits in (a shared GPU, a CPU test)"),
        "parallel": choice("ddp", "fsdp", doc="with several processes (torchrun, SLURM)"),
        "log_every": integer(1, doc="steps between metric rows"),
        "ckpt_every": integer(1, doc="steps between checkpoints (also on SIGTERM/SIGUSR1)"),
        "progress": flag("a bar on a terminal, log lines off one"),
        "allow_drift": flag("resume even when a changed train.* key alters the numbers (recorded in run.json)"),
        "keep_ckpt_at": Key(_steps, "steps whose checkpoints are kept for cooldown branches (set by a suite's branches)"),
    },
    "train.wandb": {
        "mode": Key(lambda v: v if v is None else choice("disabled", "offline", "online").check(v),
                    "disabled | offline | online; null: $WANDB_MODE, else disabled"),
        "project": text(null="$WANDB_PROJECT, else optarena", doc="wandb project"),
        "entity": text(null="$WANDB_ENTITY", doc="wandb entity"),
        "group": text(null="<suite>/<optimizer>", doc="wandb group"),
        "tags": names("wandb tags"),
    },
    "tune": {
        "trials": integer(1, doc="trials per study, whatever their outcome"),
        "budget_fraction": number(0, 1, lo_open=True, doc="each trial's tokens / the suite's"),
        "lr_range": anything("[lo, hi] sampled log-uniformly; null: each optimizer's own range"),
        "widen": integer(0, doc="times a study with its best lr at an edge goes on a decade beyond it"),
        "trial_seed": integer(0, doc="the seed of every trial, never one of the suite's seeds"),
        "search_warmup": anything("also sample the warmup: true for [0, 0.2], or [lo, hi]"),
        "search_weight_decay": anything("also sample the weight decay: true for [1e-3, 1], or [lo, hi]"),
        "sampler": choice("tpe", "grid", doc="seeded TPE, or log-spaced lrs"),
        "seed": integer(0, doc="the sampler's seed"),
        "startup_trials": integer(0, null="a quarter of the trials, 2 to 10", doc="random trials first"),
        "pruner": choice("auto", "median", "hyperband", "none",
                         doc="on the val loss at each evaluation; auto: median, none under a wsd schedule"),
        "storage": anything("sqlite | journal | an RDB URL"),
        "workers": integer(1, doc="worker processes on this machine"),
        "models": Key(lambda v: v if v is None else names().check(v or None),
                      "the models whose lrs are tuned (the others take the lr law's); null: every model"),
    },
}

LAUNCHERS: dict[str, dict[str, Key]] = {
    "local": {},
    "torchrun": {"nproc_per_node": integer(1, doc="processes per run on this node")},
    "slurm": {
        "nodes": integer(1, doc="nodes per job"),
        "tasks_per_node": integer(1, doc="tasks (ranks) per node"),
        "gpus_per_node": integer(0, doc="GPUs each node gives the job"),
        "cpus_per_task": integer(1, doc="CPUs per task"),
        "mem_gb": number(0, lo_open=True, null="the cluster's default", doc="memory per node"),
        "partition": text(null="the cluster's default", doc="SLURM partition"),
        "timeout_min": integer(1, doc="time limit of each job"),
        "signal_delay_s": integer(0, doc="SIGUSR2 this long before the time limit"),
        "array": flag("one job array for all the runs"),
        "array_parallelism": integer(1, doc="array tasks at the same time"),
        "wait": flag("block until every job has ended"),
        "sbatch": mapping("other sbatch options, e.g. {account: x}"),
    },
}
# Keys the runner derives and records in a resolved config; a user does not set them.
DERIVED = {"budget": {"warmup_steps": integer(0)}}

MODEL = {
    "vocab_size": integer(1), "block_size": integer(1), "n_layer": integer(1), "n_head": integer(1),
    "n_embd": integer(1), "dropout": number(0, 1, hi_open=True), "bias": flag(),
}


def did_you_mean(word, candidates) -> str:
    close = closest(word, candidates)
    return f" (did you mean {close}?)" if close else ""


def show(v) -> str:
    """A value as it would be typed (YAML), not as Python prints it."""
    if v is None or isinstance(v, bool):
        return {None: "null", True: "true", False: "false"}[v]
    return repr(v) if isinstance(v, str) else str(v).replace("'", "")


def _check_keys(section: dict, keys: dict[str, Key], where: str, errors: list[str],
                derived: dict[str, Key] | None = None, required: bool = True) -> dict:
    out = {}
    allowed = {**keys, **(derived or {})}
    for k, v in section.items():
        if k not in allowed:
            errors.append(f"unknown key {where}{k}" + (
                f": did you mean {where}{c}?" if (c := closest(k, allowed)) else
                f": {where.rstrip('.') or 'the top level'} has {', '.join(allowed)}"))
            continue
        try:
            out[k] = allowed[k].check(v)
        except Bad as e:
            errors.append(f"{where}{k}={show(v)}: {e}")
    if required:
        errors.extend(f"{where}{k}: missing (suites/config.yaml's defaults provide it)"
                      for k in keys if k not in section)
    return out


def closest(word, candidates) -> str | None:
    """The candidate nearest to `word`, if one is near enough to be what was meant."""
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return close[0] if close else None


def _check_optimizer(opt: dict, errors: list[str]) -> None:
    name = opt.get("name")
    try:
        spec = optimizers.spec_of(opt)
    except optimizers.SpecError as e:  # a `_target_` section: the message starts with its key
        errors.append(f"optimizer.{e}")
        return
    except ValueError as e:
        errors.append(f"optimizer.name: {e}" + did_you_mean(name, optimizers.names()))
        return
    target = "_target_" in opt
    if target and (problem := taken_name(name, "optimizer.name=")):
        errors.append(f"optimizer.name={show(name)}: {problem}")
    for k, v in opt.items():
        if k == "name" or (target and k in optimizers.SPEC_KEYS):
            continue
        if not optimizers.accepts(spec, k):
            known = optimizers.options(spec)
            close = closest(k, known)
            errors.append(f"unknown key optimizer.{k}: {name} has " + (
                f"no {k}; did you mean optimizer.{close}?" if close else f"{', '.join(known)}"))
            continue
        # A class's None default says nothing of the kind it takes (a registered one's: a number).
        if k in spec.defaults and not (target and spec.defaults[k] is None):
            problem = hparam_problem(spec.defaults[k], v)
            if problem:
                errors.append(f"optimizer.{k}={show(v)}: {problem} ({name})")


def taken_name(name, rename: str) -> str | None:
    """Why an optimizer named by `_target_` cannot be called `name`, if it cannot; `rename` says
    where the name is set, e.g. "optimizer.name=" (a `my_` name is proposed after it)."""
    if name in optimizers.names():
        return (f"the name of a registered optimizer; name yours another way ({rename}my_{name}), so "
                "that results never mix the two")
    if not (isinstance(name, str) and name and name.isprintable() and "/" not in name):
        return f"not a name for run folders: name it without '/' ({rename}my_optimizer)"
    return None


def hparam_problem(default, v) -> str | None:
    """What is wrong with `v` for an option whose default is `default`, by kind only."""
    if isinstance(default, bool):
        return None if isinstance(v, bool) else "must be true or false"
    if isinstance(default, (tuple, list)):
        n = len(default)
        if isinstance(v, (list, tuple)) and len(v) == n and all(
                _is_number(x) and math.isfinite(x) for x in v):
            return None
        return f"must be a list of {n} finite numbers"
    if _is_number(default) or default is None:
        if v is None or (_is_number(v) and math.isfinite(v)):
            return None
        return "must be a finite number" + (", or null" if default is None else "")
    return None


class ConfigError(ValueError):
    """Problems a user can fix: one line each, naming the key and the fix."""

    def __init__(self, errors: list[str]):
        self.errors = list(dict.fromkeys(errors))
        super().__init__("\n".join(self.errors))

    def __reduce__(self):  # crosses to and from worker processes whole, not split into characters
        return ConfigError, (self.errors,)


def validate_run(cfg: dict, resolved: bool = False) -> dict:
    """A run's own sections (what a launcher hands a worker too), checked and normalized;
    `resolved` admits the keys the runner derives (budget.warmup_steps)."""
    errors: list[str] = []
    for name in ("model", "optimizer", "data", "budget", "train"):
        if not isinstance(cfg.get(name), dict):
            errors.append(f"{name}: missing section, or not a mapping (suites/config.yaml's "
                          "defaults provide it)")
    if errors:
        raise ConfigError(errors)
    out = dict(cfg)
    out.update(_check_keys({k: cfg[k] for k in ("suite", "seed", "results_dir") if k in cfg},
                           SUITE, "", errors, required=False))
    out.update(_check_keys({k: cfg[k] for k in RUN_ONLY if k in cfg}, RUN_ONLY, "", errors, required=False))
    model = cfg["model"]
    if model.get("name") not in PRESETS:
        errors.append(f"model.name={show(model.get('name'))}: choose one of {', '.join(PRESETS)}"
                      + did_you_mean(model.get("name"), PRESETS))
    out["model"] = {"name": model.get("name"), **_check_keys(
        {k: v for k, v in model.items() if k != "name"}, MODEL, "model.", errors, required=False)}
    _check_optimizer(cfg["optimizer"], errors)
    for name in ("budget", "data", "train"):
        section = {k: v for k, v in cfg[name].items() if (name, k) != ("train", "wandb")}
        out[name] = _check_keys(section, SECTIONS[name], f"{name}.", errors,
                                DERIVED.get(name) if resolved else None)
    wandb = cfg["train"].get("wandb")
    if isinstance(wandb, dict):
        out["train"]["wandb"] = _check_keys(wandb, SECTIONS["train.wandb"], "train.wandb.", errors)
    else:
        errors.append(f"train.wandb={show(wandb)}: must be a mapping of mode, project, entity, "
                      "group, tags (e.g. train.wandb.mode=offline)")
    if out["train"].get("compile_step"):
        errors.extend(compiled_step.refusal(cfg["optimizer"]))
    if errors:
        raise ConfigError(errors)
    return out


def validate_launcher(launcher) -> dict:
    """The launcher section: its name and that launcher's own keys."""
    name = launcher.get("name") if isinstance(launcher, dict) else None
    if name not in LAUNCHERS:
        raise ConfigError([f"launcher={show(name)}: choose one of {', '.join(LAUNCHERS)} (suites/launcher/)"])
    errors: list[str] = []
    out = {"name": name, **_check_keys({k: v for k, v in launcher.items() if k != "name"},
                                       LAUNCHERS[name], "launcher.", errors, required=False)}
    if errors:
        raise ConfigError(errors)
    return out


def validate(cfg: dict) -> dict:
    """A composed config, every problem at once: the suite-level keys, the launcher, tune and
    the run's own sections; returns it normalized (counts as ints, plan_device in lower case)."""
    errors: list[str] = []
    out = dict(cfg)
    top = {k: v for k, v in cfg.items() if k not in (*SECTIONS, "model", "optimizer", "launcher")}
    out.update(_check_keys(top, SUITE, "", errors))
    seeds = cfg.get("seeds")
    if _is_number(seeds) and seeds > MAX_SEEDS:
        errors.append(f"seeds={seeds}: more than {MAX_SEEDS} seeds per arm; give a smaller count")
    try:
        out["launcher"] = validate_launcher(cfg.get("launcher"))
    except ConfigError as e:
        errors.extend(e.errors)
    if isinstance(cfg.get("tune"), dict):
        out["tune"] = _check_keys(cfg["tune"], SECTIONS["tune"], "tune.", errors)
    else:
        errors.append(f"tune={show(cfg.get('tune'))}: must be a mapping (tune.<key>=value)")
    try:
        out = validate_run(out)
    except ConfigError as e:
        errors.extend(e.errors)
    if errors:
        raise ConfigError(errors)
    return out


def help_rows() -> list[tuple[str, str]]:
    """(key, help) for every documented key, for --help."""
    rows = [(k, key.doc) for k, key in SUITE.items()]
    for section, keys in SECTIONS.items():
        rows += [(f"{section}.{k}", key.doc) for k, key in keys.items()]
    rows += [(f"launcher.{k}", f"[{name}] {key.doc}") for name, keys in LAUNCHERS.items()
             for k, key in keys.items()]
    return rows
