"""Optuna learning-rate tuning at equal cost: one study per (suite, model, optimizer).

    python -m runners.tune suite=tiny [only=[adamw,lamb]] [tune.trials=8] [tune.workers=2] [...]

Every optimizer gets the same number of trials and every trial the same token budget, a
fraction of the suite's with the schedule (warmup, decay, evaluations) re-derived for it in the
same way for all. A trial is a run like any other (its own run folder, resumable), and a study
is an Optuna study in a storage that any number of workers share (runners/tune_worker.py keeps
the trial count exact and resumes the trials of killed workers). Launching it again continues
where it stopped.

Options, as `tune.<key>=value` overrides (or a `tune:` section in a suite file; the defaults are in
suites/config.yaml, their kinds in runners/schema.py; `plan=true` prints the studies and their cost):
  trials               20      trials per study, whatever their outcome
  budget_fraction      1.0     each trial's tokens as a fraction of the suite's budget
  lr_range             null    [lo, hi], sampled log-uniformly, for every optimizer; null: each
                               optimizer's own range (its spec's lr_range, optimizers/)
  widen                2       when a study's best lr is at an edge of the lrs searched, a study
                               of trials/2 more goes on a decade beyond that edge, up to this
                               many times (its tuned.yaml entry is the best of them all)
  trial_seed           1000    the seed of every trial: not one of the suite's (evaluation) seeds
  search_warmup        false   also sample the warmup, as a fraction of the trial's steps:
                               true for [0, 0.2], or [lo, hi]
  search_weight_decay  false   also sample the weight decay log-uniformly (optimizers that
                               have one): true for [1e-3, 1], or [lo, hi]
  sampler              tpe     tpe (seeded TPE) | grid (`trials` log-spaced lrs over lr_range)
  seed                 0       the sampler's seed: one worker gives the same study every time
  startup_trials       null    random trials before TPE models the results, and completed trials
                               before the median pruner prunes; null: a quarter of the trials, 2 to 10
  pruner               auto    median | hyperband | none, on the val loss at each evaluation
                               (the median pruner leaves the first quarter of a trial alone);
                               auto: median, and none under budget.schedule=wsd, whose loss
                               before the cooldown does not rank lrs (median or hyperband
                               with wsd is refused)
  storage              sqlite  sqlite (tuning/optuna.db) | journal (tuning/journal.log) | an RDB URL
  workers              1       worker processes on this machine (CUDA: spread over the visible GPUs)
  models               null    the models to tune, each at its own main budget (a ladder's
                               largest rung); the suite gives the others, for an lr `tuned`, the
                               lr law fitted over these (runners/lr_law.py); null: every model

What it writes under results/<suite>/:
  tuning/trials/<run_id>/  one run folder per trial (apart from the suite's own runs)
  tuning/<study>.json      the trials, their outcomes and cost (analysis/load.py reads it)
  tuned.yaml               {model: {budget tokens: {optimizer: {lr, value, trials, tokens,
                           device_seconds, stable_band, ...}}}} once a study has all its trials;
                           a suite uses it with `lr: tuned`
Watch it live with `optuna-dashboard sqlite:///results/<suite>/tuning/optuna.db`
(or `optuna-dashboard results/<suite>/tuning/journal.log`).

On a cluster, start it as several jobs that share the results folder, each a worker, e.g.
`sbatch --array=0-7 --gpus=1 --wrap "python -m runners.tune suite=X tune.storage=journal"`:
the trial budget is shared through the storage and a file lock in results/<suite>/tuning/,
and a preempted job's trial is resumed by the next job to look for work.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import torch

import optimizers
from runners import plan as planning
from runners.config import ConfigError, resolve_run
from runners.data import prepare_on_first_use
from runners.hydra_app import compose_config
from runners.suite import expand, optimizer_arms, plan_device, refuse_slow_cpu_start, suite_seeds
from runners.launch import LaunchFailed, forwarding_signals
from runners.run_folder import read_json
from runners.tune_worker import (
    FINISHED, family_rows, flock, n_trials, range_edge, searched_range, stable_lr_band, storage, summarize,
    trial_config, work, write_records,
)

SEARCH_RANGES = {"search_warmup": ("warmup", [0.0, 0.2], False),
                 "search_weight_decay": ("weight_decay", [1e-3, 1.0], True)}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _interval(errors: list[str], key: str, value, lo_min: float, hi_max: float) -> list | None:
    if (isinstance(value, list) and len(value) == 2 and all(_number(v) for v in value)
            and lo_min <= value[0] < value[1] <= hi_max):
        return [float(v) for v in value]
    errors.append(f"tune.{key}={value!r}: give [lo, hi] with {lo_min:g} <= lo < hi"
                  + (f" <= {hi_max:g}" if math.isfinite(hi_max) else ""))
    return None


def options(suite_cfg: dict) -> dict:
    """The suite's `tune` options (their kinds checked by runners.schema), with the ranges and
    the combinations checked here; every problem at once."""
    opts, errors = dict(suite_cfg["tune"]), []
    if opts["lr_range"] is not None:
        opts["lr_range"] = _interval(errors, "lr_range", opts["lr_range"], math.ulp(0), math.inf)
    for key, (_, default, log) in SEARCH_RANGES.items():
        value = default if opts[key] is True else opts[key]
        if value is not False:
            value = _interval(errors, key, value, math.ulp(0) if log else 0.0, math.inf if log else 0.99)
        opts[key] = value or None
    if opts["sampler"] == "grid" and (opts["search_warmup"] or opts["search_weight_decay"]):
        errors.append("tune.sampler=grid searches the lr alone: use tune.sampler=tpe to search "
                      "warmup or weight decay too")
    wsd = suite_cfg["budget"]["schedule"] == "wsd"
    if opts["pruner"] == "auto":
        opts["pruner"] = "none" if wsd else "median"
    elif wsd and opts["pruner"] != "none":
        errors.append(f"tune.pruner={opts['pruner']} with budget.schedule=wsd: a wsd trial's loss before its "
                      "cooldown does not rank lrs as its final loss does (a higher lr is behind until the decay), "
                      "so pruning on it drops the lrs that would have won: set tune.pruner=none (or auto)")
    if opts["startup_trials"] is None:
        opts["startup_trials"] = min(10, max(2, opts["trials"] // 4))
    store = opts["storage"]
    if not isinstance(store, str) or (store not in ("sqlite", "journal") and "://" not in store):
        errors.append(f"tune.storage={store!r}: choose sqlite, journal, or an RDB URL "
                      "(e.g. postgresql://user:pass@host/db)")
    if errors:
        raise ConfigError(errors)
    return opts


def _grid(lo: float, hi: float, n: int) -> list[float]:
    """n log-spaced lrs from lo to hi, the inner ones rounded to 3 significant digits."""
    inner = [float(f"{v:.3g}") for v in np.geomspace(lo, hi, n)[1:-1]]
    return [lo] if n == 1 else [lo, *inner, hi]


def _trial_template(raw: dict, tuning_dir: Path, fraction: float) -> dict:
    """A suite run's config turned into a trial's: its run folder under tuning/trials/ and, for
    a fraction of the budget, the schedule derived from the shorter budget: the same warmup
    share and decay to the last step; evaluations as often as in the suite (they cost the
    same share of it), but at least 4 of them for the pruner."""
    t = copy.deepcopy(raw)
    t["results_dir"], t["suite"] = str(tuning_dir), "trials"
    t["train"] = {**t["train"], "progress": False}  # the worker prints a line per trial instead
    if fraction < 1:
        b = resolve_run(raw, check_data=False)["budget"]
        steps = max(1, int(b["steps"] * fraction))
        t["budget"] = {**t["budget"], "tokens": None, "steps": steps,
                       "warmup": b["warmup_steps"] / b["steps"],
                       "eval_every": min(b["eval_every"], max(1, steps // 4))}
    return t


def study_specs(suite_cfg: dict, opts: dict) -> list[dict]:
    """One study per (model, optimizer) of the suite (of tune.models' models), each at its model's
    main budget and checked at every corner of its search space before anything runs."""
    errors: list[str] = []
    arms = optimizer_arms(suite_cfg, errors)
    if errors:
        raise ConfigError(errors)
    # Trials run on a seed the comparison never uses, so the lr is not chosen on the very
    # initial weights and data order that the verdicts are computed from.
    evaluated = suite_seeds(suite_cfg)
    if opts["trial_seed"] in evaluated:
        raise ConfigError([f"tune.trial_seed={opts['trial_seed']} is one of the suite's seeds {evaluated}: "
                           "tuning must not see the evaluation seeds; pick another tune.trial_seed"])
    ranges = {n: opts["lr_range"] or list(optimizers.spec_of({"name": n, **hp}).lr_range)
              for n, hp in arms.items()}
    # The lr is what is tuned: whatever the suite says of it (a grid, `tuned`) is set aside.
    one_run_each = {**suite_cfg, "optimizers": {n: {**hp, "lr": ranges[n][0]} for n, hp in arms.items()},
                    "optimizer_defaults": {}, "only": None, "seeds": [opts["trial_seed"]]}
    tuning_dir = Path(suite_cfg["results_dir"]) / suite_cfg["suite"] / "tuning"
    specs = []
    models = opts.get("models")
    for raw in expand(one_run_each):
        name, model = raw["optimizer"]["name"], raw["model"]["name"]
        if models is not None and model not in models:
            continue
        lo, hi = ranges[name]
        try:
            template = _trial_template(raw, tuning_dir, opts["budget_fraction"])
            suite_budget = resolve_run(raw, check_data=False)["budget"]
        except ConfigError as e:
            errors.extend(e.errors)
            continue
        space = {"lr": [lo, hi, True]}
        for key, (param, _, log) in SEARCH_RANGES.items():
            if opts[key] and (param != "weight_decay" or param in optimizers.spec_of(raw["optimizer"]).defaults):
                space[param] = [*opts[key], log]
        study = f"{suite_cfg['suite']}-{model}-{name}"
        spec = {"study": study, "family": study, "model": model, "optimizer": name,
                "template": template, "space": space, "suite_tokens": suite_budget["tokens"],
                "trial_seed": opts["trial_seed"]}
        resolved = []
        for corner in itertools.product(*[[(p, lo_), (p, hi_)] for p, (lo_, hi_, _) in space.items()]):
            try:
                resolved.append(resolve_run(trial_config(spec, dict(corner)), check_data=not specs))
            except ConfigError as e:
                errors.extend(e.errors)
        if not resolved:
            continue
        b = resolved[0]["budget"]
        spec.update(steps=b["steps"], eval_every=b["eval_every"], resolved=resolved[0],
                    budget={k: b[k] for k in ("tokens", "steps", "global_batch", "seq_len", "schedule")})
        if opts["sampler"] == "grid":
            spec["grid"] = _grid(lo, hi, opts["trials"])
        specs.append(spec)
    if errors:
        raise ConfigError(list(dict.fromkeys(errors)))
    return specs


def _setup(spec: dict) -> dict:
    """What makes a study's trials comparable with each other (the run config but for the
    searched parameters, and the search space; a grid's size too): a study is not continued
    under another one. TPE's trial count, the seed and the pruner may change between launches."""
    cfg = {k: v for k, v in spec["resolved"].items() if k not in ("train", "suite", "results_dir")}
    cfg["optimizer"] = {k: v for k, v in cfg["optimizer"].items() if k not in spec["space"]}
    cfg["budget"] = {k: v for k, v in cfg["budget"].items() if k not in spec["space"]}
    return {"run": cfg, "space": spec["space"], "grid": spec.get("grid")}


def create_studies(plan: dict, specs: list[dict]) -> None:
    """Create (or check and reopen) every study before any worker starts: racing workers would
    each try to create a fresh SQLite database's tables."""
    store, errors = storage(plan["storage"]), []
    with flock(Path(plan["dir"]) / ".lock"):
        for spec in specs:
            study = optuna.create_study(study_name=spec["study"], storage=store, direction="minimize",
                                        load_if_exists=True)
            setup = json.loads(json.dumps(_setup(spec)))  # as it reads back from storage
            old = study.user_attrs.get("setup")
            if old is None:
                study.set_user_attr("setup", setup)
            elif old != setup:
                differ = sorted(k for k in setup if old.get(k) != setup[k])
                errors.append(f"study {spec['study']} in {plan['storage']} was made with another setup "
                              f"(differing: {', '.join(differ)}): delete it (optuna delete-study "
                              f"--study-name {spec['study']} --storage ...) or tune into another results_dir")
    if errors:
        raise ConfigError(errors)


def _storage_url(store: str, tuning_dir: Path) -> str:
    if store == "sqlite":
        return f"sqlite:///{(tuning_dir / 'optuna.db').absolute()}"
    if store == "journal":
        return str((tuning_dir / "journal.log").absolute())
    return store


def _portable(spec: dict) -> dict:
    """A study's spec as the workers get it (JSON), without the resolved run it was checked with."""
    return {k: v for k, v in spec.items() if k != "resolved"}


def _rows(tuning_dir: Path, spec: dict) -> list[dict]:
    return (read_json(tuning_dir / f"{spec['study']}.json") or {}).get("trials", [])


class WorkersFailed(LaunchFailed):
    """Some worker processes died; their running trials resume at the next launch."""


def run_workers(plan: dict, n: int) -> list[str]:
    """`n` worker processes (or this process when n = 1); returns, when all have ended, a line
    for each that did not end cleanly."""
    if n == 1:
        work(plan)
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    threads = max(1, (os.cpu_count() or 1) // n)  # n workers share the cores, not each take all
    procs = []
    for i in range(n):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        p = subprocess.Popen([sys.executable, "-m", "runners.tune_worker"], stdin=subprocess.PIPE,
                             env=env, text=True)
        p.stdin.write(json.dumps(plan))
        p.stdin.close()
        procs.append(p)
    with forwarding_signals(lambda: (p.pid for p in procs if p.poll() is None)):
        codes = [p.wait() for p in procs]
    return [f"pid {p.pid} exit code {code}" for p, code in zip(procs, codes) if code]


def _latest(studies: list[dict]) -> list[dict]:
    """The last study of each optimizer's family (a study and those widening it), in order."""
    return list({s["family"]: s for s in studies}.values())


def widened(spec: dict, rows: list[dict], trials: int, round_: int) -> dict | None:
    """The study that goes on a decade beyond the edge of the lrs searched so far, when the
    family's best lr lies at that edge (the optimum may lie beyond it), with half the trials
    (at least 2); None when the best lies inside."""
    lo, hi = searched_range(spec)
    best = summarize(rows)["best"]
    edge = best and range_edge(best["params"]["lr"], lo, hi)
    if not edge:
        return None
    new_lo, new_hi = (lo / 10, lo) if edge == "low" else (hi, hi * 10)
    n = max(2, trials // 2)
    ext = {**spec, "study": f"{spec['family']}-wider{round_}", "trials": n, "edge": edge,
           "space": {**spec["space"], "lr": [new_lo, new_hi, True]},
           "widens": [*spec.get("widens", []), spec["study"]], "searched": [min(lo, new_lo), max(hi, new_hi)]}
    if "grid" in spec:  # the n lrs beyond the edge, the edge itself already tried
        points = _grid(new_lo, new_hi, n + 1)
        ext["grid"] = points[:-1] if edge == "low" else points[1:]
    return ext


def summary(plan: dict) -> str:
    """Rewrite every study's records and tabulate them."""
    store = storage(plan["storage"])
    rows = [("study", "trials", "completed", "pruned", "diverged", "failed", "best lr", "best loss",
             "stable lr band", "tokens", "device-s")]
    family = {}
    with flock(Path(plan["dir"]) / ".lock"):
        for spec in plan["studies"]:
            study = optuna.load_study(study_name=spec["study"], storage=store)
            trials = write_records(study, plan, spec)
            family[spec["family"]] = family.get(spec["family"], []) + trials
            s, (lo, hi) = summarize(trials), stable_lr_band(trials)
            best, c = s["best"], s["count"]
            rows.append((spec["study"], f"{s['finished']}/{n_trials(plan, spec)}", c["completed"], c["pruned"],
                         c["diverged"], c["failed"], f"{best['params']['lr']:.3g}" if best else "-",
                         f"{best['value']:.4f}" if best else "-",
                         f"{lo:.3g} - {hi:.3g}" if math.isfinite(lo) else "-",
                         f"{s['tokens']:,}", f"{s['device_seconds']:.0f}"))
    warnings = []
    for spec in _latest(plan["studies"]):
        best, (lo, hi) = summarize(family[spec["family"]])["best"], searched_range(spec)
        if edge := best and range_edge(best["params"]["lr"], lo, hi):
            wider = [lo / 10, hi] if edge == "low" else [lo, hi * 10]
            warnings.append(f"warning: {spec['family']}: the best lr {best['params']['lr']:.3g} is at the "
                            f"{edge} edge of the lrs searched, [{lo:.3g}, {hi:.3g}]; the optimum may lie beyond "
                            f"it: tune again with a larger tune.widen, or tune.lr_range=[{wider[0]:.3g},"
                            f"{wider[1]:.3g}], into another results_dir")
    return "\n".join([planning.text_table(rows), *warnings])


def tune(overrides: list[str], multirun: bool = False, config_dir: str | None = None) -> dict:
    """Tune every (model, optimizer) of the suite; returns the plan the workers ran."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if multirun and any(o.split("=", 1)[0] == "optimizer.lr" for o in overrides):
        raise ConfigError(["-m optimizer.lr=...: tuning searches the lr itself; give its range as "
                           "tune.lr_range=[lo,hi] (or tune.sampler=grid for log-spaced lrs)"])
    suite_cfg = compose_config(overrides, config_dir, multirun=multirun)
    opts = options(suite_cfg)
    launcher = suite_cfg["launcher"]["name"]
    if launcher != "local":
        raise ConfigError([f"launcher={launcher}: tuning starts its workers as local processes "
                           "(tune.workers=N); on SLURM, submit `python -m runners.tune ...` as a job "
                           "array sharing the results folder (see runners/tune.py)"])
    prepare_on_first_use(suite_cfg["data"]["name"], suite_cfg["data"]["path"])
    specs = study_specs(suite_cfg, opts)
    if suite_cfg["plan"]:
        print(tuning_plan(suite_cfg, specs, opts))
        return {"studies": specs}
    tuning_dir = Path(suite_cfg["results_dir"]) / suite_cfg["suite"] / "tuning"
    tuning_dir.mkdir(parents=True, exist_ok=True)
    plan = {"dir": str(tuning_dir.absolute()), "storage": _storage_url(opts["storage"], tuning_dir),
            "trials": opts["trials"], "budget_fraction": opts["budget_fraction"],
            **{k: opts[k] for k in ("sampler", "seed", "startup_trials", "pruner")},
            "studies": [_portable(s) for s in specs]}
    create_studies(plan, specs)

    store = storage(plan["storage"])
    left = {s["study"]: max(0, opts["trials"] - len(optuna.load_study(study_name=s["study"], storage=store)
                                                    .get_trials(deepcopy=False, states=FINISHED)))
            for s in specs}
    device = "cuda" if suite_cfg["train"]["device"] != "cpu" and torch.cuda.is_available() else "cpu"
    seconds = sum(planning.estimate(s["resolved"], device, 1).seconds * left[s["study"]]
                  for s in specs) / opts["workers"]
    refuse_slow_cpu_start(f"tuning {suite_cfg['suite']}", "its trials", seconds, device,
                          suite_cfg.get("force"), "tune.trials, tune.budget_fraction, only=[...]")
    sizes = sorted({(s["budget"]["tokens"], s["budget"]["steps"]) for s in specs})
    each = " to ".join(f"{t:,} tokens ({n} steps)" for t, n in dict.fromkeys([sizes[0], sizes[-1]]))
    print(f"tuning {suite_cfg['suite']}: {len(specs)} studies x {opts['trials']} trials of {each}, "
          f"{sum(left.values())} trials to run on "
          f"{opts['workers']} worker(s), about {planning.human_seconds(seconds)} on {device}; "
          f"storage {plan['storage']}", flush=True)
    failed = run_workers(plan, opts["workers"])
    for round_ in range(1, opts["widen"] + 1):
        if failed:
            break
        wider = [w for spec in _latest(specs) if (w := widened(
            spec, family_rows(tuning_dir, spec, _rows(tuning_dir, spec)), opts["trials"], round_))]
        if not wider:
            break
        for w in wider:
            lo, hi, _ = w["space"]["lr"]
            print(f"{w['family']}: the best lr is at the {w['edge']} edge of the lrs searched; widening: "
                  f"{w['trials']} more trials over [{lo:.3g}, {hi:.3g}] ({w['study']})", flush=True)
        create_studies(plan, wider)
        specs += wider
        plan["studies"] += [_portable(w) for w in wider]
        failed = run_workers(plan, opts["workers"])
    print(summary(plan), flush=True)
    if failed:
        raise WorkersFailed(f"{len(failed)} of {opts['workers']} workers did not end cleanly "
                            f"({'; '.join(failed)}): run again to resume their trials")
    return plan


def tuning_plan(suite_cfg: dict, specs: list[dict], opts: dict) -> str:
    """What `plan=true` prints: every study, its search space and its cost; nothing is created."""
    device = plan_device(suite_cfg)
    rows = [("study", "trials", "tokens/trial", "steps", "lr range", "also searched", "est. time")]
    total = 0.0
    for s in specs:
        seconds = planning.estimate(s["resolved"], device, 1).seconds * opts["trials"]
        total += seconds
        lo, hi, _ = s["space"]["lr"]
        rows.append((s["study"], opts["trials"], f"{s['budget']['tokens']:,}", s["steps"],
                     f"{lo:.3g} - {hi:.3g}", ", ".join(k for k in s["space"] if k != "lr") or "-",
                     planning.human_seconds(seconds)))
    return "\n".join([f"tuning {suite_cfg['suite']}: {len(specs)} studies, {opts['sampler']} sampler, "
                      f"{opts['pruner']} pruner, {opts['workers']} worker(s)", planning.text_table(rows),
                      f"total: about {planning.human_seconds(total / opts['workers'])} on {device} "
                      f"(before pruning), and up to {opts['widen']} widening(s) of "
                      f"{max(2, opts['trials'] // 2)} trials for a study whose best lr is at an edge"])


ENTRY = tune

if __name__ == "__main__":
    from runners.cli import main

    main(tune, "tune")
