"""A run's config: resolve the derived values and check everything before anything runs.

`resolve_run(raw)` turns a composed Hydra config (as a plain dict) into the fully resolved config
that a run records: model fields from the preset, optimizer defaults merged in, the budget in
both tokens and steps, the warmup in steps, budget-coupled optimizer options filled in, and
`train.micro_batch: auto` turned into the number the planner chooses (runners/plan.py).
Every problem found is reported at once, each as one line that names the field and the fix.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math

import psutil
import torch

import optimizers
from models import model_config
from runners import plan
from runners.data import DataError, open_data
from runners.schema import ConfigError, validate_run

RUN_KEYS = ("suite", "seed", "results_dir", "model", "optimizer", "data", "budget", "train", "branch")
# Keys that change how a run executes but not what it computes: they stay out of the run_id.
RUNTIME_SECTION = "train"


def _budget_steps(errors: list[str], budget: dict, tokens_per_step: int) -> int | None:
    tokens, steps = budget.get("tokens"), budget.get("steps")
    if tokens is not None and steps is not None and tokens == steps * tokens_per_step:
        return steps  # an already resolved budget
    if tokens is not None and steps is not None:
        errors.append(f"budget: tokens={tokens} and steps={steps} are both set: keep one")
        return None
    if tokens is None and steps is None:
        errors.append("budget: set budget.tokens or budget.steps")
        return None
    key, value = ("tokens", tokens) if tokens is not None else ("steps", steps)
    n = int(value // tokens_per_step) if key == "tokens" else int(value)
    if n < 1:
        errors.append(f"budget.tokens={tokens} is less than one step of {tokens_per_step} tokens "
                      "(global_batch x seq_len): raise budget.tokens")
        return None
    return n


def _warmup_steps(errors: list[str], warmup: int | float, steps: int) -> int:
    if isinstance(warmup, float):
        return int(round(warmup * steps))
    if warmup >= steps:
        errors.append(f"budget.warmup={warmup} steps is not shorter than the run ({steps} steps)")
    return warmup


def _miniature(mcfg):
    """A model of the same family with the same head count, small enough to build in a millisecond."""
    from dataclasses import replace

    from models import GPT

    return GPT(replace(mcfg, vocab_size=8, block_size=8, n_layer=1, n_embd=2 * mcfg.n_head))


def _target_problem(name: str, target: str, e: Exception) -> str:
    why = str(e).strip().splitlines()
    return (f"optimizer: {name} ({target}) cannot be built with these hyper-parameters on a miniature "
            f"model: {type(e).__name__}{': ' + why[0] if why else ''}")


def _auto_micro_batch(errors: list[str], cfg: dict, world_size: int) -> int | None:
    """train.micro_batch=auto: the largest micro-batch the planner says fits (runners/plan.py),
    confirmed on a visible GPU by a short probe when one process trains."""
    train = cfg["train"]
    cuda = train["device"].startswith("cuda") or (train["device"] == "auto" and torch.cuda.is_available())
    index = int(train["device"][5:]) if train["device"].startswith("cuda:") else 0
    if train["memory_limit_gib"] is not None:
        memory, where = train["memory_limit_gib"] * 2**30, f"train.memory_limit_gib={train['memory_limit_gib']:g}"
    elif cuda and not torch.cuda.is_available():
        errors.append(f"train.micro_batch=auto: no CUDA device is visible here to size it for (train.device="
                      f"{train['device']}): set train.memory_limit_gib to its memory per rank (e.g. 80), or "
                      "give train.micro_batch a number")
        return None
    elif cuda:
        props = torch.cuda.get_device_properties(index)
        memory, where = props.total_memory, f"the memory of {props.name}"
    else:
        memory, where = psutil.virtual_memory().total, "this machine's memory"
    fit, peak_at_one = plan.micro_batches_that_fit(cfg, world_size, memory, cuda and train["dtype"] != "float32")
    if fit and cuda and torch.cuda.is_available() and world_size == 1:
        probed = plan.probe_cuda(cfg, fit, index, memory)
        if probed is None:
            errors.append(f"train.micro_batch=auto: a step on the GPU went past {1 - plan.MEMORY_MARGIN:.0%} of "
                          f"{plan.human_bytes(memory)} ({where}) at every micro-batch the plan allows "
                          f"({', '.join(map(str, fit))}): shorten budget.seq_len or take a smaller model (or give "
                          "train.micro_batch a number to try one anyway)")
        return probed
    if not fit:
        raise_it = "raise train.memory_limit_gib, " if train["memory_limit_gib"] is not None else ""
        errors.append(f"train.micro_batch=auto: even one sequence per forward pass needs about "
                      f"{plan.human_bytes(peak_at_one)} per rank, more than {1 - plan.MEMORY_MARGIN:.0%} of "
                      f"{plan.human_bytes(memory)} ({where}): {raise_it}shard with train.parallel=fsdp over "
                      "more ranks, shorten budget.seq_len or take a smaller model")
        return None
    return fit[0]


def resolve_run(raw: dict, world_size: int = 1, check_data: bool = True) -> dict:
    """The resolved run config, or ConfigError listing every problem."""
    # A run's config is these keys; the rest (suite-level keys) describe how runs are made.
    cfg = validate_run(copy.deepcopy({k: raw[k] for k in RUN_KEYS if k in raw}), resolved=True)
    model, opt, data, budget, train = (cfg[k] for k in ("model", "optimizer", "data", "budget", "train"))
    errors: list[str] = []

    # model
    try:
        mcfg = model_config(model["name"], **{k: v for k, v in model.items() if k != "name"})
        if mcfg.n_embd % mcfg.n_head:
            raise ValueError(f"model.n_embd={mcfg.n_embd} is not a multiple of model.n_head="
                             f"{mcfg.n_head}: change one of them")
        cfg["model"] = {"name": model["name"], **mcfg.__dict__}
    except ValueError as e:
        errors.append(str(e))
        mcfg = None

    # budget
    tokens_per_step = budget["global_batch"] * budget["seq_len"]
    steps = _budget_steps(errors, budget, tokens_per_step)
    auto = train["micro_batch"] == "auto"  # sized below, once the model and the optimizer are known
    micro = budget["global_batch"] // world_size if auto else train["micro_batch"] or budget["global_batch"] // world_size
    if budget["global_batch"] % (micro * world_size):
        errors.append(
            f"budget.global_batch={budget['global_batch']} is not divisible by " + (
                f"the world size {world_size}: pick a multiple of {world_size}" if auto else
                f"train.micro_batch={micro} x world size {world_size}: pick a micro_batch that divides "
                f"{budget['global_batch'] // math.gcd(budget['global_batch'], world_size)}"))
    if mcfg is not None and budget["seq_len"] > mcfg.block_size:
        errors.append(f"budget.seq_len={budget['seq_len']} exceeds the model's block_size="
                      f"{mcfg.block_size}: shorten seq_len or set model.block_size")
    if steps is not None:
        budget["steps"] = steps
        budget["tokens"] = steps * tokens_per_step
        budget["warmup_steps"] = _warmup_steps(errors, budget["warmup"], steps)

    # optimizer
    name = opt.get("name")
    # The tuner's range says nothing of what a run computes: it stays out of the run's record.
    hparams = {k: v for k, v in opt.items() if k not in ("name", "lr_range")}
    target = hparams.get("_target_")
    try:
        spec = optimizers.spec_of(opt)
        for key in spec.budget_options:
            if hparams.get(key) is None and steps is not None:
                hparams[key] = steps
        cfg["optimizer"] = {"name": name, **optimizers.resolve_hparams(name, **hparams)}
        if cfg["optimizer"].get("betas") is not None:
            cfg["optimizer"]["betas"] = list(cfg["optimizer"]["betas"])
        if mcfg is not None:  # let the optimizer check its values now, on a miniature model
            optimizers.build(name, _miniature(mcfg), **hparams)
    except (ValueError, TypeError) as e:
        errors.append(f"optimizer: {e}" if target is None else _target_problem(name, target, e))
    except Exception as e:  # a user's own optimizer may raise anything; a built-in's is a bug
        if target is None:
            raise
        errors.append(_target_problem(name, target, e))

    if auto and not errors:  # the model, the optimizer and the batch are sound: size it for them
        train["micro_batch"] = _auto_micro_batch(errors, cfg, world_size)

    # data: seed s is the pair (initial weights s, data order s) unless data.seed says otherwise
    if data["seed"] is None:
        data["seed"] = cfg["seed"]
    if data["val_tokens"] < budget["seq_len"] + 1:
        errors.append(f"data.val_tokens={data['val_tokens']} gives no full validation window of "
                      f"{budget['seq_len'] + 1} tokens (budget.seq_len + 1): raise data.val_tokens")
    if check_data and mcfg is not None:
        try:
            tokens = open_data(data["name"], data["path"], mcfg.vocab_size, budget["seq_len"])
            held_out = data["val_tokens"] + data["test_tokens"]
            if len(tokens.val) < held_out:
                errors.append(f"data: {tokens.path / 'val.bin'} holds {len(tokens.val):,} tokens, fewer than "
                              f"data.val_tokens + data.test_tokens = {held_out:,}: lower them")
        except DataError as e:
            errors.append(f"data: {e}")
    if errors:
        raise ConfigError(errors)
    return cfg


def run_id(cfg: dict) -> str:
    """A pure function of what the run computes: the same config always gets the same id."""
    semantic = {k: v for k, v in cfg.items() if k not in (RUNTIME_SECTION, "suite", "results_dir")}
    digest = hashlib.sha256(json.dumps(semantic, sort_keys=True, default=str).encode()).hexdigest()
    if cfg.get("branch"):  # a cooldown branch (runners/branches.py): its parent, and its budget
        return f"{cfg['branch']['parent']}-to{cfg['budget']['steps']}-{digest[:6]}"
    opt = cfg["optimizer"]
    return f"{cfg['model']['name']}-{opt['name']}-lr{opt['lr']:g}-s{cfg['seed']}-{digest[:8]}"
