"""Cooldown branches: end-of-schedule losses at several budgets from one run.

A warmup-stable-decay run holds its peak lr until its cooldown, and that stable part does not
depend on the run's length (runners/schedule.py). So the suite key `branches: [0.25, 0.5]`
makes each wsd run (the main run, of the suite's budget) keep its checkpoint at the step where
the cooldown of a run of 0.25 and of 0.5 of its steps would start, and adds for each fraction a
branch: a run of that budget that starts from the kept checkpoint and only cools down (Hägele
et al. 2024, arXiv 2405.18392). A branch computes exactly what a dedicated wsd run of its budget
with the main run's warmup steps and optimizer options computes (tests/test_branches.py), at
the cost of its cooldown. Its run_id names its parent and its steps; it resumes, skips and locks
like any run, and its metrics.jsonl begins with its parent's rows up to the branch point, so its
curve is whole.

The lr of a branch is its parent's: one lr serves every budget of the main run (tuned at the
main run's budget), which is the method's assumption.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

from runners.checkpoint import STATE_FILE, damage, restore
from runners.config import ConfigError, resolve_run, run_id
from runners.run_folder import RunError, RunFolder, atomic_write, read_json, replace, temp_path
from runners.schedule import cooldown_start

KEPT_DIR = "kept"  # in a main run's ckpt/: step-<N>.pt (an FSDP2 run: folder step-<N>) and step-<N>.json


def _listing(folder: RunFolder, step: int) -> Path:
    return folder.ckpt_dir / KEPT_DIR / f"step-{step}.json"


def _kept(listing: Path, entry: dict) -> Path:
    return listing.with_suffix("" if "dir" in entry else ".pt")


def keep(folder: RunFolder, step: int) -> None:
    """Keep the checkpoint just saved at `step` for a branch: hard links to its file (ckpt/state.pt)
    or to its FSDP2 folder's files (later saves rename or remove those; the links keep these
    bytes), and its manifest entry."""
    entry = (folder.checkpoints() or [{}])[0]
    if entry.get("step") != step or not ("size" in entry or "dir" in entry):
        raise RunError(f"{folder.path.name}: no checkpoint of step {step} to keep for a branch")
    listing = _listing(folder, step)
    kept = _kept(listing, entry)
    kept.parent.mkdir(exist_ok=True)
    tmp = temp_path(kept)
    if "dir" in entry:
        shutil.rmtree(tmp, ignore_errors=True)
        for name in entry["files"]:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            os.link(folder.ckpt_dir / entry["dir"] / name, tmp / name)
        shutil.rmtree(kept, ignore_errors=True)  # a kill after a former keep of this step
    else:
        tmp.unlink(missing_ok=True)
        os.link(folder.ckpt_dir / STATE_FILE, tmp)
    replace(tmp, kept)
    atomic_write(listing, json.dumps(entry) + "\n")


def start(folder: RunFolder, cfg: dict, model, opt, sharded: bool, write_rows: bool = True) -> dict:
    """A branch's first start: load its parent's kept checkpoint into `model` and `opt` (`sharded`:
    every FSDP2 rank its own shards), give the branch its parent's metrics rows up to that step
    (`write_rows`: on rank 0 only), and return the checkpoint's progress."""
    branch = cfg["branch"]
    parent = folder.path.parent / branch["parent"]
    listing = _listing(RunFolder(parent), branch["from_step"])
    entry = read_json(listing)
    if entry is None:
        raise RunError(f"{folder.path.name}: its parent {branch['parent']} has no kept checkpoint of step "
                       f"{branch['from_step']}: run the parent first (a suite runs parents before branches)")
    kept = _kept(listing, entry)
    if why := damage(kept, entry):
        raise RunError(f"{kept} is damaged ({why}): run the parent {branch['parent']} again from the start "
                       "to remake it")
    restore(model, opt, kept, sharded)
    if write_rows:
        rows = [line for line in (parent / "metrics.jsonl").read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= branch["from_step"]]
        folder.path.mkdir(parents=True, exist_ok=True)
        atomic_write(folder.metrics_path, "".join(f"{line}\n" for line in rows))
    return {**entry["progress"], "branched_from": branch}


def with_branches(suite_cfg: dict, mains: list[dict]) -> tuple[list[dict], list[dict]]:
    """The suite's resolved main runs, each keeping the checkpoints its branches start from, and
    the branches, resolved; or ConfigError."""
    fractions = suite_cfg.get("branches") or []
    if not fractions:
        return mains, []
    errors: list[str] = []
    if not all(isinstance(f, float) and 0 < f < 1 for f in fractions) or len(set(fractions)) < len(fractions):
        raise ConfigError([f"branches={fractions}: give distinct fractions of the budget between 0 and 1, "
                           "e.g. [0.25, 0.5] (the main run is the whole budget)"])
    kept_mains, branches = [], []
    for main in mains:
        b = main["budget"]
        if b["schedule"] != "wsd":
            errors.append(f"branches: budget.schedule={b['schedule']}: cooldown branches need a warmup-stable-"
                          "decay run: set budget.schedule=wsd")
            break
        keep_at, parent = [], run_id(main)
        for f in sorted(fractions):
            steps = int(round(f * b["steps"]))
            at = cooldown_start(steps, b["cooldown"])
            if at < b["warmup_steps"]:
                errors.append(f"branches: {f} of {b['steps']} steps is {steps} steps, whose cooldown would "
                              f"start at step {at}, inside the warmup of {b['warmup_steps']} steps: "
                              "drop that fraction or shorten budget.warmup")
                continue
            keep_at.append(at)
            raw = copy.deepcopy(main)
            raw["budget"] = {**b, "tokens": None, "steps": steps, "warmup": b["warmup_steps"]}
            raw["branch"] = {"parent": parent, "from_step": at}
            try:
                branches.append(resolve_run(raw, check_data=False))
            except ConfigError as e:
                errors.extend(e.errors)
        kept_mains.append({**main, "train": {**main["train"], "keep_ckpt_at": keep_at}})
    if errors:
        raise ConfigError(list(dict.fromkeys(errors)))
    return kept_mains, branches


def cosine_checks(suite_cfg: dict, branches: list[dict]) -> list[dict]:
    """With the suite key cosine_check: for each branch, a cosine run of its budget, seed, lr and
    warmup steps from step 0, resolved (analysis/schedule_check.py holds the two against each other)."""
    if not suite_cfg.get("cosine_check"):
        return []
    if not branches:
        raise ConfigError(["cosine_check=true: there are no cooldown branches to check; set branches=[...] "
                           "(with budget.schedule=wsd), or cosine_check=false"])
    checks = []
    for branch in branches:
        raw = {k: copy.deepcopy(v) for k, v in branch.items() if k != "branch"}
        raw["budget"]["schedule"] = "cosine"
        checks.append(resolve_run(raw, check_data=False))
    return checks

