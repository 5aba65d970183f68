"""The comparison: results tables -> per-arm statistics against the baseline, one per budget.

An *arm* is one model + optimizer + hyper-parameter setting (normally model + optimizer + lr) at
one budget; its runs differ only by seed. Seeds are paired across arms (seed s gives every
optimizer the same initial weights and data order), so differences to the baseline are taken
seed by seed. A run that diverged or failed is its arm's loss on that seed (+inf to the test in
`analysis.stats`); a running, interrupted or pruned run has no outcome yet and joins no pair.
A folder holding several budgets (budget.tokens) gives one Comparison per budget.

Only end-of-schedule points are compared: every run whose schedule ended at its budget (cosine or
wsd runs, cooldown branches). A stable-phase run (budget.schedule constant) ends at no budget: it
joins no comparison and is listed only with the cost of the branches cut from it. A cooldown
branch (`branch: {parent, from_step}` in its config, runners/branches.py) is a run like any other
at its budget, but its own cost is only its cooldown steps; its parent is a stable-phase run or
the main wsd run of a suite (itself compared at its own budget). An arm's family is the same arm across budgets (an optimizer's
one arm at each budget, else optimizer + lr source, with the lr itself unless tuned per budget):
the baseline's family gives the loss-vs-budget law the token-equivalent speedup is read off
(analysis.speedup).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from . import schedule_check, speedup, stats
from .load import ResultsError, load_declared, load_runs, load_tuning

FAILED = ("diverged", "failed")  # outcomes that count as a loss of their arm
STABLE = "constant"  # the schedule of a stable-phase run: it ends at no budget
# Where each arm's lr came from, as the run folders show it (config, tuned.yaml, the other arms).
LR_SOURCES = {
    "tuned": "tuned.yaml's lr for this model and optimizer at this budget",
    "grid": "one of several lrs of this optimizer (an lr grid)",
    "default": "the optimizer's registered default lr",
    "shared": "the lr of other optimizers too (the suite's optimizer_defaults)",
    "set": "an lr given for this optimizer alone",
    "lr law": "the lr law fitted over the suite's tuned rungs, at this model's size (lr_law.json)",
}
LR_LAW_FILE = "lr_law.json"  # as runners/lr_law.py writes it
# What tuning an arm's lr cost, on the rung where it was tuned (tuned.yaml's entry; NaN elsewhere).
TUNING_COST = ["tuning_trials", "tuning_tokens", "tuning_device_s"]
SHIPPED_TUNED = Path(__file__).resolve().parents[1] / "suites" / "tuned.yaml"  # as runners.suite reads it
WARM_STEPS = 10  # runners/train.py leaves min(10, steps // 10) warm-up steps out of its timings
NOISE_SDS = 3.0  # a forward+backward this many robust sds of the runs' spread off is machine noise
# Per-arm columns against the baseline (NaN for the baseline itself and where there is none).
VS_BASELINE = [
    "is_baseline", "n_pairs", "delta", "delta_lo", "delta_hi", "sd_delta", "p_value", "mde", "verdict",
    "time_to_target_s",
]
# Per-arm columns of the token-equivalent speedup (analysis.speedup.Speedup), filled in once every
# budget's arms are known: the baseline's law spans them.
SPEEDUP = ["speedup", "speedup_lo", "speedup_hi", "speedup_label", "speedup_where", "baseline_tokens",
           "speedup_gap", "speedup_beyond", "speedup_note"]
TIMINGS = ("tokens_per_s", "step_s", "fwd_bwd_s", "opt_s")  # per logged step; tokens/s is global


@dataclass
class Comparison:
    folder: Path
    tokens: int  # the budget (budget.tokens) every run here was compared at
    runs: pd.DataFrame  # one row per run, with its `arm` label
    metrics: pd.DataFrame  # one row per logged step, with `arm` and `seed`
    arms: pd.DataFrame  # one row per arm: every figure of the report
    baseline: dict[str, str]  # model -> the baseline arm's label
    budget: dict[str, dict]  # model -> the budget its runs were compared at
    target: dict[str, float]  # model -> the val loss that time-to-target is measured at
    loss: str  # the runs' summary field compared: final_test_loss, else final_val_loss
    fwd_bwd: pd.DataFrame  # model -> seconds (the optimizer-independent forward+backward per
    #                        step: the median run's), noise (robust sd over runs), runs
    tuning: pd.DataFrame | None  # one row per trial, or None
    tuning_summary: pd.DataFrame | None  # one row per study, or None
    stable: pd.DataFrame  # the folder's stable-phase runs (every budget's Comparison holds them all)
    checks: pd.DataFrame  # cosine runs beside wsd runs of their budget (analysis/schedule_check.py); all of them
    laws: dict[str, speedup.Law]  # model -> the loss-vs-budget law of the baseline's family

    @property
    def split(self) -> str:
        """'test' or 'val': the data split whose final loss is compared."""
        return "test" if self.loss == "final_test_loss" else "val"

    @property
    def problems(self) -> pd.DataFrame:
        """Every run that did not complete: listed in the report, never silently dropped."""
        bad = self.runs[self.runs.status != "completed"]
        cols = ["arm", "seed", "status", "step", "total_steps", "diverged_at_step", "error", "run_id"]
        return bad[cols].sort_values(["arm", "seed"]).reset_index(drop=True)


def _fmt_value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else json.dumps(v)


def _label_arms(runs: pd.DataFrame, many_models: bool) -> pd.Series:
    """'adamw lr=0.001', plus any other hyper-parameter that varies across that optimizer's arms;
    prefixed 'model/' in a folder of several models (at every budget, so that an arm keeps its
    name across budgets even where one model alone reached a budget)."""
    labels = {}
    for (model, opt), g in runs.groupby(["model", "optimizer"], sort=False):
        hps = {h: json.loads(h) for h in g.hparams.unique()}
        keys = {k for d in hps.values() for k in d} - {"lr"}
        varying = sorted(k for k in keys if len({json.dumps(d.get(k)) for d in hps.values()}) > 1)
        for h, d in hps.items():
            parts = [opt, f"lr={_fmt_value(d.get('lr'))}"] + [f"{k}={_fmt_value(d.get(k))}" for k in varying]
            labels[(model, opt, h)] = (f"{model}/" if many_models else "") + " ".join(parts)
    return pd.Series([labels[k] for k in zip(runs.model, runs.optimizer, runs.hparams)], index=runs.index)


def _one_setting(runs: pd.DataFrame, what: str, ignore: tuple[str, ...] = ()) -> dict[str, dict]:
    """model -> its runs' `what` config section (less `ignore`), refusing several in one comparison."""
    out = {}
    for model, g in runs.groupby("model"):
        seen = {json.dumps({k: v for k, v in (c.get(what) or {}).items() if k not in ignore}, sort_keys=True)
                for c in g.config}
        if len(seen) > 1:
            raise ResultsError(
                f"runs of model {model!r} at {g['cfg.budget.tokens'].iloc[0]:,} tokens use {len(seen)} "
                f"different {what} settings; a comparison is made at one {what}: put each in its own results folder"
            )
        out[model] = json.loads(seen.pop())
    return out


def _check_pairing(runs: pd.DataFrame) -> None:
    """A seed must mean one data order for every arm, or its runs are not paired."""
    orders = runs.groupby(["model", "seed"])["cfg.data.seed"].nunique()
    if (orders > 1).any():
        model, seed = orders[orders > 1].index[0]
        raise ResultsError(f"seed {seed} of model {model!r} trains on {orders.max()} different data orders "
                           "(data.seed) across arms: its runs are not paired")


def _check_one_run_per_seed(runs: pd.DataFrame, tokens: int) -> None:
    """An arm has one outcome per seed: a cooldown branch and a dedicated run of one seed and budget
    are two arms' worth of runs, not one."""
    twice = runs[runs.duplicated(["arm", "seed"], keep=False)]
    if len(twice):
        arm, seed = twice.arm.iloc[0], twice.seed.iloc[0]
        ids = ", ".join(twice.run_id[(twice.arm == arm) & (twice.seed == seed)])
        raise ResultsError(f"{arm} has several runs of seed {seed} at {tokens:,} tokens ({ids}): a comparison takes "
                           "one per seed: put the others in their own results folder")


def _mean(s: pd.Series) -> float:
    s = pd.to_numeric(s, errors="coerce")
    return float(s.mean()) if s.notna().any() else math.nan


def _micro_batches(g: pd.DataFrame) -> str:
    """The micro-batches (sequences per forward pass on each rank) the runs of an arm ran with: a
    null train.micro_batch is the whole per-rank batch; `auto` was resolved to a number."""
    none = pd.Series(math.nan, index=g.index)
    whole = pd.to_numeric(g.get("cfg.budget.global_batch", none)) // pd.to_numeric(
        g.get("env.world_size", none)).fillna(1)
    micro = pd.to_numeric(g.get("cfg.train.micro_batch", none), errors="coerce").fillna(whole)
    return ", ".join(str(int(m)) for m in sorted(set(micro.dropna())))


def _loss_field(runs: pd.DataFrame) -> str:
    """The held-out test loss when every completed run has one (tuning never saw it), else val."""
    test = pd.to_numeric(runs[runs.status == "completed"].final_test_loss, errors="coerce")
    return "final_test_loss" if test.notna().all() else "final_val_loss"


def _outcomes(runs: pd.DataFrame, arm: str, field: str) -> pd.Series:
    """seed -> the arm's final loss; +inf where it diverged or failed; unfinished seeds left out."""
    g = runs[(runs.arm == arm) & runs.status.isin(("completed", *FAILED))]
    return pd.Series(np.where(g.status == "completed", pd.to_numeric(g[field], errors="coerce"), np.inf),
                     index=g.seed, dtype=float)


def _paired(runs: pd.DataFrame, arm: str, base: str, field: str) -> dict:
    x, b = _outcomes(runs, arm, field), _outcomes(runs, base, field)
    seeds = x.index.intersection(b.index)
    failed = runs[runs.arm == arm].status.isin(FAILED).any()
    return stats.paired_difference(x[seeds].to_numpy(), b[seeds].to_numpy(), arm_failed=failed)


def _timed_steps(metrics: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Logged training steps of completed runs, less the warm-up steps train.py leaves untimed."""
    done = runs[runs.status == "completed"][["run_id", "total_steps"]]
    m = metrics.merge(done, on="run_id")
    m = m[m.time_fwd_bwd_s.notna() & (m.step > np.minimum(WARM_STEPS, m.total_steps // 10))]
    return m.assign(fwd_bwd_s=m.time_fwd_bwd_s, opt_s=m.time_opt_s, step_s=m.time_fwd_bwd_s + m.time_opt_s)


def _timing(steps: pd.DataFrame) -> dict:
    """Median and 5-95% range over the arm's logged steps, all seeds pooled."""
    out = {}
    for name in TIMINGS:
        v = steps[name].dropna()
        lo, med, hi = np.quantile(v, [0.05, 0.5, 0.95]) if len(v) else (math.nan,) * 3
        out |= {name: med, f"{name}_lo": lo, f"{name}_hi": hi}
    return out


def _registered_lr(optimizer: str):
    import optimizers  # torch: only when an arm's lr has to be placed

    try:
        return optimizers.spec(optimizer).defaults["lr"]
    except ValueError:  # not a registered name: no default to compare with
        return None


def _read_yaml(path: Path) -> dict:
    try:
        return (yaml.safe_load(path.read_text()) if path.is_file() else None) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ResultsError(f"{path}: cannot read it as YAML ({e})") from None


def _tuned_entry(tuned: list[dict], model: str, tokens: int, optimizer: str) -> dict | None:
    """tuned.yaml's entry (model -> budget tokens -> optimizer), the suite's own before the shipped one."""
    for t in tuned:
        entry = ((t.get(model) or {}).get(str(tokens)) or {}).get(optimizer)
        if entry:
            return entry
    return None


def _parent_budget(arm_runs: pd.DataFrame, f) -> int | None:
    """The budget of the main run the arm's branches start from (they keep its lr), or None."""
    budgets = {f.budgets.get((_branch(c) or {}).get("parent")) for c in arm_runs.config}  # one parent per seed
    return budgets.pop() if len(budgets) == 1 else None


def read_lr_law(folder: Path) -> dict:
    """lr_law.json: per optimizer the law fitted over the tuned rungs and its residuals, and the lrs
    it gave (runners/lr_law.py); {} when no rung took its lr from a law."""
    path = folder / LR_LAW_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as e:
        raise ResultsError(f"{path}: cannot read it as JSON ({e})") from None


def _law_lrs(folder: Path) -> dict:
    """The lrs the suite's lr law gave its untuned rungs, laid out as tuned.yaml is (model -> budget
    tokens -> optimizer -> {lr, lr_law: how it was fitted}); {} without a law."""
    doc = read_lr_law(folder)
    out: dict = {}
    for g in doc.get("given", []):
        law = doc["laws"][g["optimizer"]]
        out.setdefault(g["model"], {}).setdefault(str(g["tokens"]), {})[g["optimizer"]] = {
            "lr": g["lr"], "lr_law": f"{law['form']} over {law['rungs']} tuned rungs"}
    return out


def _lr_source(r, arms: pd.DataFrame, tuned: list[dict], tokens: int, parent_tokens: int | None = None) -> str:
    entry = _tuned_entry(tuned, r.model, parent_tokens or tokens, r.optimizer)
    at = f" at its main run's {parent_tokens:,} tokens" if parent_tokens else ""
    if entry and entry.get("lr_law") and math.isclose(entry["lr"], r.lr, rel_tol=1e-9):
        return f"lr law{at} ({entry['lr_law']})"
    if entry and math.isclose(entry.get("lr", math.nan), r.lr, rel_tol=1e-9):
        edge = entry.get("at_edge")
        return "tuned" + at + (f" (best at the {edge} edge of its range)" if edge else "")
    same_model = arms[arms.model == r.model]
    if same_model[same_model.optimizer == r.optimizer].lr.nunique() > 1:
        return "grid"
    default = _registered_lr(r.optimizer)
    if default is not None and math.isclose(default, r.lr, rel_tol=1e-9):
        return "default"
    others = same_model[same_model.optimizer != r.optimizer].lr
    return "shared" if np.isclose(others, r.lr, rtol=1e-9).any() else "set"


def _tuning_cost(r, tuned: list[dict], tokens: int, parent_tokens: int | None) -> list[float]:
    """trials, tokens and device-seconds of the tuning that chose the arm's lr at this budget (a
    branch's lr was tuned at its main run's budget, and counted there)."""
    entry = None if parent_tokens else _tuned_entry(tuned, r.model, tokens, r.optimizer)
    if not entry or entry.get("lr_law") or not math.isclose(entry.get("lr", math.nan), r.lr, rel_tol=1e-9):
        return [math.nan] * len(TUNING_COST)
    return [float(entry.get(k, math.nan)) for k in ("trials", "tokens", "device_seconds")]


def _arm_row(g: pd.DataFrame, loss: str, steps: pd.DataFrame) -> dict:
    done = g[g.status == "completed"]
    x = pd.to_numeric(done[loss], errors="coerce").to_numpy()
    lo, hi = stats.mean_ci(x)
    div = g[g.status == "diverged"]
    return {
        "model": g.model.iloc[0], "optimizer": g.optimizer.iloc[0], "lr": g.lr.iloc[0],
        "hparams": g.hparams.iloc[0], "n_runs": len(g), "n_completed": len(done),
        "n_diverged": len(div), "n_failed": int((g.status == "failed").sum()),
        "seeds": sorted(done.seed.tolist()),
        "diverged_at": sorted(int(s) for s in div.diverged_at_step.dropna()),
        "loss_mean": float(x.mean()) if x.size else math.nan,
        "loss_sd": float(x.std(ddof=1)) if x.size > 1 else math.nan,
        "loss_lo": float(lo), "loss_hi": float(hi), "val_loss_mean": _mean(done.final_val_loss),
        # Memory of the completed runs; state bytes do not depend on the outcome.
        "tokens": _mean(done.tokens), "opt_state_bytes": _mean(g.opt_state_bytes),
        "peak_mem_bytes": _mean(done.peak_mem_bytes),
        "peak_mem_kind": ", ".join(sorted(set(done.peak_mem_kind.dropna()))),
        "cuda_max_reserved_bytes": _mean(done.cuda_max_reserved_bytes), "mfu": _mean(done.mfu),
        "wall_time_s": _mean(done.wall_time_s),
        "world_size": _mean(done.get("env.world_size", pd.Series(dtype=float))),
        "micro_batch": _micro_batches(g),
    } | _timing(steps[steps.arm == g.arm.iloc[0]])


def _val_curves(metrics: pd.DataFrame, runs: pd.DataFrame, arm: str, values: str = "val_loss") -> pd.DataFrame:
    """step (index) by seed (columns) table of the arm's completed runs, evaluation rows only."""
    ids = runs[(runs.arm == arm) & (runs.status == "completed")].run_id
    m = metrics[metrics.run_id.isin(ids) & metrics.val_loss.notna()]
    return m.pivot_table(index="step", columns="seed", values=values)


def _time_to_target(runs: pd.DataFrame, metrics: pd.DataFrame, arm: str, target: float) -> dict:
    """Training seconds (wall_time_s) until the arm's seed-averaged val curve first reaches `target`."""
    loss = _val_curves(metrics, runs, arm).dropna()  # steps every seed evaluated at
    secs = _val_curves(metrics, runs, arm, values="wall_time_s").loc[loss.index]
    if loss.empty:
        return {"time_to_target_s": math.nan}
    t, where = stats.first_reach(secs.mean(axis=1).to_numpy(), loss.mean(axis=1).to_numpy(), target)
    return {"time_to_target_s": float(t[0]) if where[0] != 1 else math.nan}


def _tuning_summary(tuning: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for study, g in tuning.groupby("study", sort=False):
        ok = g.value.notna()
        best = g[ok].loc[g[ok].value.idxmin()] if ok.any() else None
        lo, hi = stats.stable_band(g.lr, g.value, g.status == "diverged")
        rows.append({
            "study": study, "model": g.model.iloc[0], "optimizer": g.optimizer.iloc[0],
            "n_trials": g.n_trials.iloc[0], "trials_run": len(g), "completed": int(ok.sum()),
            "diverged": int((g.status == "diverged").sum()),
            "best_loss": best.value if best is not None else math.nan,
            "best_lr": best.lr if best is not None else math.nan,
            "stable_lo": lo, "stable_hi": hi,
            "stable_decades": math.log10(hi / lo) if lo > 0 else math.nan,
            "device_seconds": float(g.device_seconds.sum()),
        })
    return pd.DataFrame(rows)


def _choose_baselines(arms: pd.DataFrame, requested: str | None, tokens: int, folder: Path) -> dict[str, str]:
    """model -> baseline arm: --baseline (an arm label, or an optimizer with one arm), else the
    suite's declared baseline, else the one adamw arm, else the one tuned adamw arm; a choice
    that is missing or ambiguous is refused, never guessed (e.g. as the best-mean arm)."""
    listing = "; ".join(arms.arm)
    if requested is not None and requested in set(arms.arm):
        return {arms.model[arms.arm == requested].iloc[0]: requested}
    declared = load_declared(folder).get("baseline")
    if requested is not None:
        want, why = {"optimizer": requested}, f"--baseline {requested!r}"
    elif declared:  # {optimizer: NAME, lr: SOURCE}, the lr source optional
        want, why = declared, f"the suite's declared baseline {json.dumps(declared)}"
    else:
        want, why = None, "the default baseline adamw"
    out = {}
    for model, g in arms.groupby("model", sort=False):
        if want is not None:
            if requested is None and not (g.optimizer == want["optimizer"]).any():
                continue  # the declared baseline did not run here (only=[...]): the report says so
            pick = g[(g.optimizer == want.get("optimizer"))
                     & g.lr_source.str.startswith(want.get("lr") or "", na=False)]
        else:
            pick = g[g.optimizer == "adamw"]
            if pick.empty:
                continue  # no baseline for this model: the report says so
            if len(pick) > 1:
                tuned = pick[pick.lr_source.str.startswith("tuned")]
                pick = tuned if len(tuned) == 1 else pick
        if len(pick) != 1:
            found = f"{len(pick)} arms ({'; '.join(pick.arm)})" if len(pick) else "no arm"
            example = (pick if len(pick) else arms).arm.iloc[0]
            raise ResultsError(f"{why} matches {found} at {tokens:,} tokens; the arms: {listing}; choose "
                               f"one: python -m analysis.report {folder} --baseline '{example}'")
        out[model] = pick.arm.iloc[0]
    return out


def _machine_noise(steps: pd.DataFrame, arms: pd.DataFrame) -> tuple[pd.DataFrame, list[bool]]:
    """(model -> the common forward+backward, its noise and run count; per arm: is it machine noise).

    Forward+backward does not depend on the optimizer, so an arm whose runs sit off the model's
    common value by more than NOISE_SDS robust sds of the runs' spread measured a busier (or
    idler) machine, not its optimizer. Runs are the unit: steps within a run share its machine.
    """
    per_run = steps.groupby("run_id").agg(model=("model", "first"), arm=("arm", "first"),
                                          fwd_bwd=("fwd_bwd_s", "median"))
    by_model = per_run.groupby("model").fwd_bwd
    ref = pd.DataFrame({"seconds": by_model.median(), "runs": by_model.size()})
    off = (per_run.fwd_bwd - by_model.transform("median")).abs()
    ref["noise"] = 1.4826 * off.groupby(per_run.model).median()
    arm_fb = per_run.groupby("arm").fwd_bwd.median()
    flags = []
    for r in arms.itertuples():
        m = ref.loc[r.model] if r.model in ref.index and r.arm in arm_fb else None
        flags.append(m is not None and m.runs >= 3 and abs(arm_fb[r.arm] - m.seconds) > NOISE_SDS * m.noise)
    return ref, flags


@dataclass
class _Folder:
    """What every budget's comparison of one folder shares."""
    path: Path
    metrics: pd.DataFrame
    baseline: str | None  # --baseline
    target_loss: float | None
    tuned: list[dict]  # tuned.yaml contents, the suite's own first
    tuning: pd.DataFrame | None
    stable: pd.DataFrame  # stable-phase runs
    checks: pd.DataFrame  # cosine runs that check the branches' schedule
    loss: str  # the summary field compared, one for every budget (the law spans them)
    budgets: dict[str, int]  # run_id -> its budget in tokens, for the parents of branches
    many_models: bool  # arm labels carry their model


def _compare_budget(f: _Folder, tokens: int, runs: pd.DataFrame) -> Comparison:
    budget = _one_setting(runs, "budget")
    _one_setting(runs, "data", ignore=("seed",))  # one evaluation set, or the losses are not comparable
    _check_pairing(runs)
    runs = runs.assign(arm=_label_arms(runs, f.many_models))
    _check_one_run_per_seed(runs, tokens)
    metrics = f.metrics.merge(runs[["run_id", "model", "arm", "seed"]], on="run_id")
    steps = _timed_steps(metrics, runs)

    arms = pd.DataFrame([_arm_row(g, f.loss, steps) | {"arm": a} for a, g in runs.groupby("arm", sort=False)])
    parents = [_parent_budget(runs[runs.arm == r.arm], f) for r in arms.itertuples()]
    arms["lr_source"] = [_lr_source(r, arms, f.tuned, tokens, p) for r, p in zip(arms.itertuples(), parents)]
    arms[TUNING_COST] = [_tuning_cost(r, f.tuned, tokens, p) for r, p in zip(arms.itertuples(), parents)]
    arms = arms.sort_values(["model", "loss_mean"], na_position="last").reset_index(drop=True)
    base = _choose_baselines(arms, f.baseline, tokens, f.path)
    if f.target_loss is None:  # by default: the time each arm needs to match the baseline's final val loss
        target = {m: float(arms.loc[arms.arm == a, "val_loss_mean"].iloc[0]) for m, a in base.items()}
    else:
        target = {m: float(f.target_loss) for m in arms.model.unique()}

    fwd_bwd, arms["machine_noise"] = _machine_noise(steps, arms)

    extra = []
    for r in arms.itertuples():
        row = {"is_baseline": base.get(r.model) == r.arm}
        if r.model in base and not row["is_baseline"]:
            row |= _paired(runs, r.arm, base[r.model], f.loss)
        if r.model in target and r.n_completed:
            row |= _time_to_target(runs, metrics, r.arm, target[r.model])
        extra.append(row)
    arms = pd.concat([arms, pd.DataFrame(extra, index=arms.index).reindex(columns=VS_BASELINE)], axis=1)
    return Comparison(folder=f.path, tokens=tokens, runs=runs, metrics=metrics, arms=arms, baseline=base,
                      budget=budget, target=target, loss=f.loss, fwd_bwd=fwd_bwd, tuning=f.tuning,
                      tuning_summary=_tuning_summary(f.tuning) if f.tuning is not None else None,
                      stable=f.stable, checks=f.checks, laws={})


# ---------------------------------------------------------------- across budgets

def _lr_token(label: str, text: str) -> str:
    """An arm label ('[model/]optimizer lr=X [key=value ...]') with its lr part replaced by text."""
    parts = label.split(" ")
    return " ".join(parts[:1] + ([text] if text else []) + parts[2:])


def _set_families(cs: list[Comparison]) -> None:
    """arms.family: the arm's name across budgets. An optimizer (with its other hyper-parameters)
    that has one arm at every budget is one family whatever its lr (a tuned lr changes with the
    budget; a branch keeps its stable run's); with several (an lr grid) each lr is one, a tuned
    one being the family of the tuned lrs."""
    arms = pd.concat([c.arms.assign(budget=c.tokens) for c in cs], ignore_index=True)
    arms["key"] = arms.model + " " + arms.optimizer + " " + arms.hparams.map(
        lambda h: json.dumps({k: v for k, v in json.loads(h).items() if k != "lr"}, sort_keys=True))
    single = arms.groupby(["key", "budget"]).size().groupby(level="key").max() == 1
    for c in cs:
        mine = arms[arms.budget == c.tokens]
        c.arms["family"] = [_lr_token(a, "" if single[k] else "lr=tuned" if src.startswith("tuned")
                                      else a.split(" ")[1])
                            for a, src, k in zip(mine.arm, mine.lr_source, mine.key)]


def endpoints(cs: list[Comparison]) -> pd.DataFrame:
    """Every end-of-schedule outcome of the folder: model, family, arm, tokens, seed, loss (the
    compared final loss; +inf where the run diverged or failed; unfinished runs left out)."""
    rows = []
    for c in cs:
        family = dict(zip(c.arms.arm, c.arms.family))
        for arm, model in zip(c.arms.arm, c.arms.model):
            out = _outcomes(c.runs, arm, c.loss)
            rows.append(pd.DataFrame({"model": model, "family": family[arm], "arm": arm, "tokens": c.tokens,
                                      "seed": out.index, "loss": out.to_numpy()}))
    return pd.concat(rows, ignore_index=True)


def _speedup_row(s: speedup.Speedup) -> dict:
    return {"speedup": s.value, "speedup_lo": s.lo, "speedup_hi": s.hi, "speedup_label": s.label,
            "speedup_where": s.where, "baseline_tokens": s.baseline_tokens, "speedup_gap": s.gap,
            "speedup_beyond": s.beyond, "speedup_note": s.note}


def _set_speedups(cs: list[Comparison]) -> None:
    """Each budget's speedups against the law of its baseline's family over every budget."""
    points = endpoints(cs)
    for c in cs:
        rows = {}
        for model, base in c.baseline.items():
            family = c.arms.family[c.arms.arm == base].iloc[0]
            base_points = points[(points.model == model) & (points.family == family)]
            c.laws[model] = speedup.baseline_law(base_points)
            for i, r in c.arms[(c.arms.model == model) & (c.arms.arm != base)].iterrows():
                if r.n_completed:
                    arm_points = points[(points.arm == r.arm) & (points.tokens == c.tokens)]
                    rows[i] = _speedup_row(speedup.endpoint_speedup(base_points, arm_points, c.tokens))
        c.arms[SPEEDUP] = pd.DataFrame.from_dict(rows, orient="index").reindex(index=c.arms.index, columns=SPEEDUP)


def _step_tokens(config: dict) -> int:
    b = config.get("budget") or {}
    return b.get("seq_len", 0) * b.get("global_batch", 0)


def _tokens(steps: pd.Series, configs: pd.Series) -> pd.Series:
    """steps x the tokens of one step of each run (no steps recorded: 0)."""
    return pd.to_numeric(steps, errors="coerce").fillna(0) * configs.map(_step_tokens)


def _branch(config: dict) -> dict | None:
    return config.get("branch")  # runners/branches.py


def branch_costs(cs: list[Comparison]) -> pd.DataFrame:
    """One row per parent its branches name (a stable-phase or a main run): its tokens, counted once, and
    its branches' own (cooldown) tokens, from from_step to the steps done, against the tokens
    dedicated runs at the branches' budgets would train. Empty without stable runs or branches."""
    runs = pd.concat([c.runs for c in cs])
    kids = runs[runs.config.map(_branch).notna()]
    shared = _tokens(kids.config.map(lambda c: _branch(c)["from_step"]), kids.config)
    kids = kids.assign(parent=kids.config.map(lambda c: _branch(c)["parent"]), shared=shared,
                       cooldown=(_tokens(kids.step, kids.config) - shared).clip(lower=0))
    # A main run that is a parent is an end-of-schedule run too: dedicated runs would train it as well.
    mains = runs[runs.run_id.isin(kids.parent)]
    stable = pd.concat([cs[0].stable, mains])
    known = stable.assign(parent=stable.run_id, stable_tokens=_tokens(stable.step, stable.config),
                          own=stable.run_id.isin(mains.run_id) * _tokens(stable.step, stable.config))
    orphans = kids[~kids.parent.isin(stable.run_id)].groupby("parent", as_index=False).agg(
        arm=("arm", "first"), seed=("seed", "first"), stable_tokens=("shared", "max")).assign(
        status="not in this folder")
    cols = ["parent", "arm", "seed", "status", "stable_tokens", "own"]
    per = kids.groupby("parent").agg(branches=("run_id", "size"), cooldown_tokens=("cooldown", "sum"),
                                     dedicated_tokens=("cfg.budget.tokens", "sum"),
                                     budgets=("cfg.budget.tokens", lambda t: sorted(int(v) for v in t)))
    out = pd.concat([known[cols], orphans.reindex(columns=cols)], ignore_index=True).merge(
        per, left_on="parent", right_index=True, how="left")
    out[["branches", "cooldown_tokens", "dedicated_tokens"]] = out[
        ["branches", "cooldown_tokens", "dedicated_tokens"]].fillna(0)
    out["dedicated_tokens"] += out.own.fillna(0)
    out["budgets"] = out.budgets.map(lambda b: b if isinstance(b, list) else [])
    return out.drop(columns="own")


def compare(folder: str | Path, baseline: str | None = None, target_loss: float | None = None) -> list[Comparison]:
    """Load a results folder and compute every figure the report shows: one Comparison per budget
    (budget.tokens), smallest first. `baseline`: an arm label, or an optimizer with one arm."""
    folder = Path(folder)
    runs, metrics = load_runs(folder)
    is_stable = schedule_check.schedule_of(runs) == STABLE
    stable, runs = runs[is_stable], runs[~is_stable]
    many_models = runs.model.nunique() > 1
    stable = stable.assign(arm=_label_arms(stable, many_models) + " (stable phase)")
    runs, checks = schedule_check.set_aside(runs)
    if not (runs.status == "completed").any():
        counts = ", ".join(f"{n} {s}" for s, n in runs.status.value_counts().items())
        also = f"; {len(stable)} stable-phase runs (constant schedule) end at no budget" if len(stable) else ""
        raise ResultsError(f"{folder}: no completed runs to compare ({counts or 'none at the end of a schedule'}"
                           f"{also})")
    suites = runs["cfg.suite"].dropna().unique()
    shipped = _read_yaml(SHIPPED_TUNED)
    # the law's lrs first: a rung the suite gave the law's lr may have a tuned one besides
    tuned = [_law_lrs(folder), _read_yaml(folder / "tuned.yaml")] + [shipped.get(s) or {} for s in suites]
    budgets = dict(zip(runs.run_id, runs["cfg.budget.tokens"].astype(int)))
    f = _Folder(folder, metrics, baseline, target_loss, tuned, load_tuning(folder), stable, checks,
                _loss_field(runs), budgets, many_models)
    cs = [_compare_budget(f, int(t), g) for t, g in runs.groupby("cfg.budget.tokens", sort=True)]
    _set_families(cs)
    _set_speedups(cs)
    return cs
