"""Synthetic results folders that follow the engine's run-folder contract (schema_version 1).

Curves are planted so tests know the answers: val loss = floor + offset + B / (1 + tokens / T0) +
seed effect, where the seed effect is shared by every optimizer (paired seeds) plus a small
optimizer-specific noise; the held-out test loss is the final val loss plus its own small noise.
Step times are the optimizer's PROFILE with a 2% jitter per logged step. A run's final loss is its
curve at its own budget, so runs at several budgets trace the end-of-schedule law
planted_loss(tokens) (write_branches: a stable-phase run and its cooldown branches).
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

# the module (analysis/__init__.py exports a function of the same name)
compare_module = importlib.import_module("analysis.compare")

STEPS, SEQ_LEN, BATCH, EVAL_EVERY, LOG_EVERY = 300, 128, 32, 50, 10
TOKENS_PER_STEP = SEQ_LEN * BATCH
FLOOR, B, T0 = 1.9, 3.6, 100_000.0
PARAMS = 812_000
# optimizer -> (state bytes per parameter, seconds per step)
PROFILE = {"adamw": (8, 0.10), "adam_mini": (4.1, 0.11), "sm3": (0.5, 0.12), "lamb": (8, 0.13)}


def planted_loss(tokens, offset: float = 0.0):
    return FLOOR + offset + B / (1.0 + np.asarray(tokens, dtype=float) / T0)


def _config(suite: str, model: str, optimizer: str, lr: float, seed: int, steps: int, schedule: str,
            branch: dict | None) -> dict:
    budget = {"tokens": steps * TOKENS_PER_STEP, "steps": steps, "seq_len": SEQ_LEN,
              "global_batch": BATCH, "micro_batch": BATCH, "schedule": schedule, "warmup_steps": 30,
              "min_lr_ratio": 0.1, "grad_clip": 1.0, "eval_every": EVAL_EVERY,
              "log_every": LOG_EVERY, "ckpt_every": 100}
    return {
        "suite": suite, "seed": seed,
        "model": {"name": model, "vocab_size": 256, "block_size": SEQ_LEN, "n_layer": 4, "n_head": 4,
                  "n_embd": 128, "dropout": 0.0, "bias": True},
        "optimizer": {"name": optimizer, "lr": lr, "betas": [0.9, 0.95], "eps": 1e-08, "weight_decay": 0.1},
        "data": {"name": "shakespeare_bytes", "seed": seed, "val_tokens": 32768, "test_tokens": 32768},
        "budget": budget,
        "train": {"device": "cpu", "compile": False, "dtype": "float32", "wandb": {"mode": "disabled"}},
    } | ({"branch": branch} if branch else {})


def write_run(suite_dir: Path, optimizer: str, seed: int, *, lr: float = 1e-3, offset: float = 0.0,
              seed_sd: float = 0.01, noise_sd: float = 0.002, status: str = "completed",
              stop_step: int | None = None, model: str = "nano", schema_version: int = 1,
              error: str | None = None, steps: int = STEPS, machine: float = 1.0, schedule: str = "cosine",
              branch: dict | None = None) -> Path:
    """One run folder. `stop_step` ends a diverged/failed/interrupted run early; `steps` sets the
    budget; `machine` scales the forward+backward time (a busier machine); `branch`
    ({parent, from_step}) makes it a cooldown branch of that stable run."""
    suite = suite_dir.name
    seed_effect = np.random.default_rng(seed).normal(0.0, seed_sd)  # shared across optimizers
    own = np.random.default_rng([seed, sum(map(ord, optimizer)), int(lr * 1e6)])
    bpp, step_s = PROFILE.get(optimizer, (8, 0.1))
    last = steps if stop_step is None else stop_step
    rows = [{"step": 0, "tokens": 0, "wall_time_s": 0.0, "val_loss": 5.6}]
    val = None
    for step in range(LOG_EVERY, last + 1, LOG_EVERY):
        tokens = step * TOKENS_PER_STEP
        clean = float(planted_loss(tokens, offset)) + seed_effect
        fwd_bwd, opt = step_s * 0.9 * machine * own.normal(1, 0.02), step_s * 0.1 * own.normal(1, 0.02)
        row = {"step": step, "tokens": tokens, "train_loss": clean + own.normal(0, 0.02),
               "lr": lr * 0.5 * (1 + math.cos(math.pi * step / steps)), "grad_norm": 0.8,
               "time_fwd_bwd_s": fwd_bwd, "time_opt_s": opt, "tokens_per_s": TOKENS_PER_STEP / (fwd_bwd + opt),
               "wall_time_s": step * step_s, "peak_mem_bytes": 500_000_000}
        if step % EVAL_EVERY == 0 or step == steps:
            val = row["val_loss"] = clean + own.normal(0, noise_sd)
        rows.append(row)
    if status == "diverged":
        rows[-1]["train_loss"] = None
    run_id = f"{model}-{optimizer}-lr{lr:g}-s{seed}" + (f"-t{steps}" if steps != STEPS else "")
    if schedule == "constant":
        run_id += "-stable"
    if branch:
        run_id = f"{branch['parent']}-cooldown{steps}"
    done = status == "completed"
    doc = {
        "schema_version": schema_version, "run_id": run_id, "suite": suite, "status": status,
        "config": _config(suite, model, optimizer, lr, seed, steps, schedule, branch),
        "env": {"git_commit": "abc1234", "git_dirty": False, "python": "3.11.7", "hostname": "vm",
                "packages": {"torch": "2.13.0+cpu", "numpy": "2.4.6"}, "device": "cpu",
                "device_name": "cpu", "world_size": 1, "started_at": "2026-11-22T19:40:00Z"},
        "step": last, "total_steps": steps,
        "diverged_at_step": last if status == "diverged" else None,
        "error": error, "updated_at": "2026-11-22T19:41:00Z",
        "summary": {
            "final_val_loss": val if done else None, "best_val_loss": val,
            "final_test_loss": val + own.normal(0, noise_sd) if done else None,
            "tokens": last * TOKENS_PER_STEP, "wall_time_s": last * step_s,
            "tokens_per_s": TOKENS_PER_STEP / step_s, "tokens_per_s_per_rank": TOKENS_PER_STEP / step_s,
            "mfu": None, "peak_mem_bytes": 500_000_000,
            "peak_mem_kind": "cpu_rss", "cuda_max_reserved_bytes": None,
            "opt_state_bytes": int(bpp * PARAMS), "param_count": PARAMS,
            "time_fwd_bwd_s": step_s * 0.9 * machine, "time_opt_s": step_s * 0.1,
        },
    }
    run_dir = suite_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps(doc, indent=1))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def write_suite(suite_dir: Path, offsets: dict[str, float] | None = None, seeds=(0, 1, 2),
                diverged: dict[tuple[str, int], int] | None = None, **run_kw) -> Path:
    """Optimizers x seeds, all completed except `diverged` {(optimizer, seed): step}; run_kw go to write_run."""
    offsets = {"adamw": 0.0, "adam_mini": -0.05, "sm3": 0.08} if offsets is None else offsets
    diverged = {("sm3", 2): 120} if diverged is None else diverged
    for opt, off in offsets.items():
        for s in seeds:
            stop = diverged.get((opt, s))
            write_run(suite_dir, opt, s, offset=off, status="diverged" if stop else "completed",
                      stop_step=stop, **run_kw)
    return suite_dir


def write_branches(suite_dir: Path, optimizer: str, seed: int, budgets=(STEPS, 2 * STEPS, 4 * STEPS),
                   cooldown: float = 0.2, **run_kw) -> list[Path]:
    """A stable-phase run (constant schedule) to the last branch point, and one wsd cooldown branch
    per budget (in steps) from `cooldown` of that budget before its end; run_kw go to write_run."""
    starts = [b - round(cooldown * b) for b in budgets]
    stable = write_run(suite_dir, optimizer, seed, steps=max(starts), schedule="constant", **run_kw)
    parent = json.loads((stable / "run.json").read_text())["run_id"]
    return [stable] + [write_run(suite_dir, optimizer, seed, steps=b, schedule="wsd",
                                 branch={"parent": parent, "from_step": k}, **run_kw)
                       for b, k in zip(budgets, starts)]


def write_tuning(suite_dir: Path, optimizer: str, lrs, best_lr: float, diverge_above: float,
                 model: str = "nano") -> Path:
    """A tuning study: loss is a parabola in log10(lr) around `best_lr`; lrs above `diverge_above` diverge."""
    trials = []
    for i, lr in enumerate(lrs):
        ok = lr <= diverge_above
        trials.append({"number": i, "params": {"lr": lr},
                       "value": 2.0 + 0.3 * math.log10(lr / best_lr) ** 2 if ok else None,
                       "status": "completed" if ok else "diverged", "device_seconds": 30.0 + i,
                       "run_id": f"{model}-{optimizer}-trial{i}"})
    path = suite_dir / "tuning" / f"{model}-{optimizer}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schema_version": 1, "optimizer": optimizer, "model": model,
                                "n_trials": len(trials), "trials": trials}))
    return path


def write_tuned(suite_dir: Path, optimizer: str, lr: float, model: str = "nano", steps: int = STEPS,
                at_edge: str | None = None) -> Path:
    """An entry of tuned.yaml as the tuner writes it: model -> budget tokens -> optimizer."""
    path = suite_dir / "tuned.yaml"
    tuned = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    tuned.setdefault(model, {}).setdefault(str(steps * TOKENS_PER_STEP), {})[optimizer] = {
        "lr": lr, "value": 2.0, "trials": 8, "at_edge": at_edge, "study": f"{model}-{optimizer}"}
    path.write_text(yaml.safe_dump(tuned, sort_keys=False))
    return path


@pytest.fixture(autouse=True, scope="module")
def shipped_tuned(tmp_path_factory) -> Path:
    """The project's suites/tuned.yaml, replaced by an empty temporary path (import this fixture
    into a test module): the lrs shipped for a real suite must not label these synthetic arms."""
    path = tmp_path_factory.mktemp("shipped") / "tuned.yaml"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compare_module, "SHIPPED_TUNED", path)
        yield path
