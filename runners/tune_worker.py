"""A tuning worker: claims trials of the studies in a plan, runs each as a run, tells Optuna.

runners/tune.py makes the plan (the studies, their search spaces and trial configs) and starts
the workers; this module is what each of them runs, and what keeps the trial budget exact when
several run at once, on one machine or on several that share the results folder:

- Claiming is serialised by an flock on `tuning/.lock`: under it a worker counts the study's
  trials and asks for a new one only while there are fewer than `trials`. Asking under the lock
  also makes the sampler's choice a function of the trials before it (TPE's seed is the tune
  seed plus the trial number; the grid's order is the seed's), so one worker gives the same
  study every time.
- A worker holds an flock on `tuning/locks/<study>.<number>.lock` while it runs a trial. The
  kernel drops it when the worker dies, even by SIGKILL, so a RUNNING trial whose lock can be
  taken has lost its worker: the next worker adopts it, and since every trial is a run whose
  run_id follows from its parameters, the run resumes from its checkpoint. No trial is lost,
  none is run twice, and a killed tuning job simply continues when launched again.
- A trial's outcome is the run's status: completed -> COMPLETE with the final val loss;
  pruned -> PRUNED; diverged -> PRUNED too (so that TPE learns from it, which it does not from a
  FAIL) with the user attribute status=diverged; an exception -> FAIL. An interrupted run
  (SIGTERM, a SLURM preemption) leaves its trial RUNNING for the next worker to resume.
"""

from __future__ import annotations

import copy
import fcntl
import json
import math
import os
import sys
import time
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from runners.config import resolve_run, run_id
from runners.run_folder import atomic_write, read_json
from runners.train import Interrupted, run

SCHEMA_VERSION = 1  # of the tuning files, as analysis/load.py reads them
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
STATUS = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
          TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}
# Where a searched parameter goes in a run's config.
PARAM_SECTION = {"lr": "optimizer", "weight_decay": "optimizer", "warmup": "budget"}


def storage(url: str) -> optuna.storages.BaseStorage:
    """`sqlite:///...` or another RDB URL, or a journal file path."""
    if "://" in url:
        # SQLite makes concurrent writers wait for its lock; the default 5 s is too short for 4.
        kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(url))


@contextmanager
def flock(path: Path):
    """Exclusive lock on `path` for the duration of the block (waits for it)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _try_hold(path: Path):
    """An open file holding an exclusive flock on `path`, or None when someone else holds it."""
    f = open(path, "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


class _Grid(optuna.samplers.GridSampler):
    """optuna's grid without its `study.stop()` once the grid is used up: stop() works only
    inside study.optimize, and here the trial budget (the grid's size) ends the study anyway."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def sampler(plan: dict, spec: dict, number: int) -> optuna.samplers.BaseSampler:
    if plan["sampler"] == "grid":  # trial n takes the n-th point of the grid shuffled by the seed
        return _Grid({"lr": spec["grid"]}, seed=plan["seed"])
    seed = plan["seed"] + number
    with warnings.catch_warnings():  # multivariate TPE is still marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # constant_liar: a running trial counts as a bad one, so that parallel workers spread out
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=plan["startup_trials"],
                                          multivariate=len(spec["space"]) > 1, constant_liar=True)


def pruner(plan: dict, spec: dict) -> optuna.pruners.BasePruner:
    if plan["pruner"] == "median":
        # Nothing is pruned in the first quarter of a trial: early losses rank lrs poorly.
        return optuna.pruners.MedianPruner(n_startup_trials=plan["startup_trials"],
                                           n_warmup_steps=spec["steps"] // 4)
    if plan["pruner"] == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=spec["eval_every"], max_resource=spec["steps"])
    return optuna.pruners.NopPruner()


def distributions(spec: dict) -> dict[str, optuna.distributions.FloatDistribution]:
    return {name: optuna.distributions.FloatDistribution(lo, hi, log=log)
            for name, (lo, hi, log) in spec["space"].items()}


def trial_config(spec: dict, params: dict) -> dict:
    """The run config of a trial: the study's template with the trial's parameters."""
    cfg = copy.deepcopy(spec["template"])
    for name, value in params.items():
        cfg[PARAM_SECTION[name]][name] = value
    return cfg


def _claim(study: optuna.Study, plan: dict, spec: dict, locks: Path):
    """(trial, its lock file, adopted) for the next trial to run, or None when the study has
    no trial left for this worker (all are finished, or running under a live worker)."""
    with flock(Path(plan["dir"]) / ".lock"):
        trials = study.get_trials(deepcopy=False)
        for t in trials:
            if t.state == TrialState.RUNNING:
                held = _try_hold(locks / f"{spec['study']}.{t.number}.lock")
                if held is not None:  # its worker died: resume it
                    # Trial(study, id) is how optuna itself attaches to a stored trial.
                    return optuna.trial.Trial(study, t._trial_id), held, t
        if len(trials) >= n_trials(plan, spec):
            return None
        study.sampler = sampler(plan, spec, len(trials))
        trial = study.ask(distributions(spec))
        held = _try_hold(locks / f"{spec['study']}.{trial.number}.lock")
        assert held is not None, "a new trial's lock is free: claims are made under the tuning lock"
        return trial, held, None


def _run_trial(study: optuna.Study, trial: optuna.Trial, adopted, plan: dict, spec: dict) -> None:
    cfg = trial_config(spec, trial.params)
    rid = run_id(resolve_run(cfg, check_data=False))
    trial.set_user_attr("run_id", rid)
    spent = adopted.user_attrs.get("device_seconds", 0.0) if adopted else 0.0
    reported = set(adopted.intermediate_values) if adopted else set()
    start = time.monotonic()

    def on_eval(step: int, tokens: int, val_loss: float) -> bool:
        if step not in reported:  # a resumed run evaluates again the steps after its checkpoint
            trial.report(val_loss, step)
        # Recorded as it goes: a worker killed now leaves its successor the time spent so far.
        trial.set_user_attr("device_seconds", spent + time.monotonic() - start)
        return trial.should_prune()

    try:
        info = run(cfg, on_eval=on_eval)
        status, error = info["status"], None
    except Interrupted:
        raise  # the run checkpointed; its trial stays RUNNING and the next worker resumes it
    except Exception as e:  # a broken trial is recorded as failed and the study goes on
        traceback.print_exc()
        status, error = "failed", f"{type(e).__name__}: {e}"
        info = read_json(Path(cfg["results_dir"]) / cfg["suite"] / rid / "run.json") or {}
    value = (info.get("summary") or {}).get("final_val_loss")
    if status == "completed" and value is None:  # a non-finite final loss
        status = "diverged"
    budget = spec["budget"]
    attrs = {"status": status, "device_seconds": spent + time.monotonic() - start,
             "tokens": info.get("step", 0) * budget["global_batch"] * budget["seq_len"]}
    if error:
        attrs["error"] = error[:1000]
    for key, v in attrs.items():
        trial.set_user_attr(key, v)
    state = {"completed": TrialState.COMPLETE, "failed": TrialState.FAIL}.get(status, TrialState.PRUNED)
    with flock(Path(plan["dir"]) / ".lock"):
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        trials = write_records(study, plan, spec)
    print(progress_line(spec, trials, trial.number, n_trials(plan, spec), resumed=adopted is not None), flush=True)


def work(plan: dict) -> None:
    """Run trials of the plan's studies, one study after the other, until none is left."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = storage(plan["storage"])
    locks = Path(plan["dir"]) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    for spec in plan["studies"]:
        study = optuna.load_study(study_name=spec["study"], storage=store, pruner=pruner(plan, spec))
        while (claim := _claim(study, plan, spec, locks)) is not None:
            trial, held, adopted = claim
            try:
                _run_trial(study, trial, adopted, plan, spec)
            finally:
                held.close()  # releases the trial's lock


# ---- records: tuning/<study>.json, tuned.yaml, progress lines -----------------------------------

def trial_rows(trials: list[optuna.trial.FrozenTrial]) -> list[dict]:
    rows = []
    for t in trials:
        # RUNNING even when its worker set the outcome but died before telling it
        status = t.user_attrs.get("status", STATUS[t.state]) if t.state in FINISHED else STATUS[t.state]
        rows.append({
            "number": t.number, "params": t.params,
            "value": t.value if t.state == TrialState.COMPLETE else None,
            "status": status, "device_seconds": t.user_attrs.get("device_seconds", 0.0),
            "tokens": t.user_attrs.get("tokens", 0), "run_id": t.user_attrs.get("run_id"),
        })
    return rows


def summarize(rows: list[dict]) -> dict:
    """The best trial, the outcome counts and the cost of a study's trials."""
    done = [r for r in rows if r["value"] is not None]
    count = {s: sum(r["status"] == s for r in rows) for s in ("completed", "pruned", "diverged", "failed")}
    return {"best": min(done, key=lambda r: r["value"]) if done else None, "count": count,
            "finished": sum(count.values()), "tokens": sum(r["tokens"] for r in rows),
            "device_seconds": sum(r["device_seconds"] for r in rows)}


def stable_lr_band(rows: list[dict]) -> list[float]:
    """[lo, hi]: the tried lrs around the best in which none diverged, as the report computes it."""
    from analysis.stats import stable_band  # imported when needed: it brings pandas and scipy

    return list(stable_band([r["params"]["lr"] for r in rows],
                            [math.nan if r["value"] is None else r["value"] for r in rows],
                            [r["status"] == "diverged" for r in rows]))


def n_trials(plan: dict, spec: dict) -> int:
    """The study's trial budget: the plan's, or a widening study's own (runners.tune.widened)."""
    return spec.get("trials", plan["trials"])


def family_rows(tuning: Path, spec: dict, own: list[dict]) -> list[dict]:
    """The trials of the study and of the studies it widens, from their tuning/<study>.json."""
    rows = []
    for part in spec.get("widens", []):
        rows += (read_json(tuning / f"{part}.json") or {}).get("trials", [])
    return rows + own


def write_records(study: optuna.Study, plan: dict, spec: dict) -> list[dict]:
    """Rewrite the study's tuning file and, once all its trials are done, its optimizer's entry
    in tuned.yaml (the best of this study and of those it widens). Called under the tuning lock,
    after every trial and at the end."""
    rows = trial_rows(study.get_trials(deepcopy=False))
    s = summarize(rows)
    doc = {"schema_version": SCHEMA_VERSION, "study": spec["study"], "optimizer": spec["optimizer"],
           "model": spec["model"], "n_trials": n_trials(plan, spec), "storage": plan["storage"],
           "budget_fraction": plan["budget_fraction"], "trial_tokens": spec["budget"]["tokens"],
           "widens": spec.get("widens", []),
           "tokens": s["tokens"], "device_seconds": s["device_seconds"], "trials": rows}
    tuning = Path(plan["dir"])
    atomic_write(tuning / f"{spec['study']}.json", json.dumps(doc, indent=2) + "\n")
    family = family_rows(tuning, spec, rows)
    f = summarize(family)
    if s["finished"] >= n_trials(plan, spec) and f["best"] is not None:
        path = tuning.parent / "tuned.yaml"
        tuned = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
        best = f["best"]
        lo, hi = searched_range(spec)
        # keyed model -> the suite's budget in tokens -> optimizer: `lr: tuned` takes an lr only
        # at the budget it was tuned for
        tuned.setdefault(spec["model"], {}).setdefault(str(spec["suite_tokens"]), {})[spec["optimizer"]] = {
            **best["params"], "value": best["value"], "metric": "final val loss",
            "at_edge": range_edge(best["params"]["lr"], lo, hi), "lr_range": [lo, hi],
            "trials": f["finished"], "tokens": f["tokens"], "device_seconds": round(f["device_seconds"], 1),
            "stable_band": stable_lr_band(family),
            "study": spec["study"], "widens": spec.get("widens", []),
            "trial_seed": spec["trial_seed"], "trial_tokens": spec["budget"]["tokens"],
            "schedule": spec["budget"].get("schedule"), "budget_fraction": plan["budget_fraction"]}
        atomic_write(path, yaml.safe_dump(tuned, sort_keys=False))
    return rows


def searched_range(spec: dict) -> tuple[float, float]:
    """The lrs searched by the study and the studies it widens."""
    lo, hi, _ = spec["space"]["lr"]
    return tuple(spec.get("searched", (lo, hi)))


def range_edge(lr: float, lo: float, hi: float) -> str | None:
    """`low` or `high` when lr lies in the outer 5% of [lo, hi] in log scale: the optimum may be
    outside the range searched, and the range should be widened on that side."""
    at = math.log(lr / lo) / math.log(hi / lo)
    return "low" if at < 0.05 else "high" if at > 0.95 else None


def progress_line(spec: dict, rows: list[dict], number: int, n_trials: int, resumed: bool = False) -> str:
    row = next(r for r in rows if r["number"] == number)
    s = summarize(rows)
    params = " ".join(f"{k} {v:.3g}" for k, v in row["params"].items())
    result = f"{row['value']:.4f}" if row["value"] is not None else row["status"]
    best = s["best"]
    best_text = f"best {best['value']:.4f} at lr {best['params']['lr']:.3g}" if best else "no completed trial yet"
    return (f"{spec['study']}: trial {number}{' (resumed)' if resumed else ''} ({s['finished']}/{n_trials} done) "
            f"{params}: {result} | {best_text} "
            f"| {row['device_seconds']:.1f} s, pid {os.getpid()}")


def main() -> None:
    """`python -m runners.tune_worker` with the plan as JSON on stdin (how runners.tune starts
    its worker processes)."""
    try:
        work(json.load(sys.stdin))
    except Interrupted as e:
        print(f"worker {os.getpid()} interrupted ({e}); run again to resume", flush=True)
        sys.exit(143)


if __name__ == "__main__":
    main()
