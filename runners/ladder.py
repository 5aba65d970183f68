"""Ladders: a suite over model sizes x budgets given in tokens per parameter.

`models: [a, b, c]` with `tokens_per_param: [5, 10, 20]` gives each model the budgets tpp x N
tokens, N its parameter count as GPT.num_params() counts it (every parameter once: the tied
head with the token embedding, the position table included), each rounded to the nearest whole
number of steps of global_batch x seq_len. One warmup-stable-decay main run per (model,
optimizer, seed) trains the largest budget; every smaller one is a cooldown branch of it
(runners/branches.py) at its steps / the main run's steps, so each budget is read at the end
of its own schedule, and a rung costs its cooldown only. The lr of a branch is its main run's,
so a rung whose lr is tuned is a (model, main budget).
"""

from __future__ import annotations

from runners import plan as planning
from runners.branches import with_branches
from runners.config import ConfigError
from runners.schedule import cooldown_start


def params(model_section: dict) -> int:
    """N of a model section (a preset's name and its overrides), built on the meta device."""
    return planning.meta_model(model_section).num_params()


def check(suite_cfg: dict, errors: list[str]) -> None:
    """What a ladder cannot be combined with."""
    b = suite_cfg["budget"]
    if b["schedule"] != "wsd":
        errors.append(f"tokens_per_param: budget.schedule={b['schedule']}: a ladder reads its budgets off the "
                      "cooldown branches of one warmup-stable-decay run: set budget.schedule=wsd")
    if suite_cfg.get("branches"):
        errors.append(f"tokens_per_param and branches={suite_cfg['branches']}: a ladder makes its own branches "
                      "(at each tokens_per_param / the largest): drop branches")
    for key in ("tokens", "steps"):
        if b[key] is not None:
            errors.append(f"tokens_per_param and budget.{key}={b[key]:g}: a ladder's budgets are tokens_per_param x "
                          f"each model's parameters: set budget.{key}=null (budget.tokens=null budget.steps=null)")


def rung_steps(suite_cfg: dict, model: str, n_params: int, errors: list[str]) -> dict[float, int]:
    """tokens per parameter -> the steps of that budget for a model of n_params parameters."""
    b = suite_cfg["budget"]
    per_step = b["global_batch"] * b["seq_len"]
    out, seen = {}, {}
    for tpp in sorted(suite_cfg["tokens_per_param"]):
        steps = round(tpp * n_params / per_step)
        if steps < 1:
            errors.append(f"tokens_per_param={tpp:g}: {model}'s {n_params:,} parameters x {tpp:g} = "
                          f"{tpp * n_params:,.0f} tokens, under one step of {b['global_batch']} x {b['seq_len']} "
                          f"tokens: raise tokens_per_param, or lower budget.global_batch")
        elif steps in seen:
            errors.append(f"tokens_per_param: {seen[steps]:g} and {tpp:g} are both {steps} steps for {model} "
                          f"({n_params:,} parameters; a step is {per_step:,} tokens): space them further apart")
        else:
            out[tpp], seen[steps] = steps, tpp
    return out


def with_rungs(suite_cfg: dict, mains: list[dict], steps: dict[str, dict[float, int]]) -> tuple[list[dict], list[dict]]:
    """The resolved main runs, keeping the checkpoints their branches start from, and the branches
    of every smaller rung (`steps`: model -> tokens per parameter -> steps); or ConfigError."""
    errors, kept, branches = [], [], []
    for model, rungs in steps.items():
        group = [m for m in mains if m["model"]["name"] == model]
        if not group:
            continue
        b = group[0]["budget"]
        main_steps = max(rungs.values())
        for tpp, s in rungs.items():
            at = cooldown_start(s, b["cooldown"])
            if s < main_steps and at < b["warmup_steps"]:
                errors.append(f"tokens_per_param={tpp:g}: {s} steps for {model}, whose cooldown would start at "
                              f"step {at}, inside the main run's warmup of {b['warmup_steps']} steps: drop it, "
                              "or shorten budget.warmup")
        fractions = [s / main_steps for s in rungs.values() if s < main_steps]
        if errors:
            continue
        k, br = with_branches({**suite_cfg, "branches": fractions}, group)
        kept += k
        branches += br
    if errors:
        raise ConfigError(errors)
    return kept, branches


def plan_table(suite_cfg: dict, resolved: list[dict], steps: dict[str, dict[float, int]],
               n_params: dict[str, int], device: str, world_size: int) -> str:
    """Each rung: its model, N, budget, its main runs or branches, and what they cost."""
    rows = [("model", "params", "tokens/param", "tokens", "steps", "runs", "est. time", "FLOPs")]
    for model, rungs in steps.items():
        main_steps = max(rungs.values())
        for tpp, s in rungs.items():
            runs = [c for c in resolved if c["model"]["name"] == model and c["budget"]["steps"] == s]
            est = [planning.estimate(c, device, world_size) for c in runs]
            kind = "main" if s == main_steps else "branches"
            b = runs[0]["budget"] if runs else suite_cfg["budget"]
            rows.append((model, f"{n_params[model]:,}", f"{tpp:g}", f"{s * b['global_batch'] * b['seq_len']:,}", s,
                         f"{len(runs)} {kind}", planning.human_seconds(sum(e.seconds for e in est)),
                         f"{sum(e.flops for e in est):.3g}"))
    return (f"ladder: {len(steps)} models x tokens_per_param {sorted(suite_cfg['tokens_per_param'])}; each "
            "budget below the largest is a cooldown branch (its cost: the cooldown only)\n" + planning.text_table(rows))
