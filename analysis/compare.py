"""The comparison: results tables -> per-arm statistics against the AdamW baseline.

An *arm* is one model + optimizer + hyper-parameter setting (normally model + optimizer + lr);
its runs differ only by seed. Seeds are paired across arms (seed s gives every optimizer the same
initial weights and data order), so differences to the baseline are taken seed by seed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import stats
from .load import ResultsError, load_runs, load_tuning

PAIRS_FOR_FULL_COVERAGE = 5  # below this many paired seeds a bootstrap interval runs narrow
# Per-arm columns against the baseline (NaN for the baseline itself and where there is none).
VS_BASELINE = [
    "is_baseline", "n_pairs", "delta", "delta_lo", "delta_hi", "sd_delta", "mde", "verdict", "provisional",
    "baseline_tokens", "speedup", "speedup_lo", "speedup_hi", "speedup_where", "time_to_target_s",
]


@dataclass
class Comparison:
    folder: Path
    runs: pd.DataFrame  # one row per run, with its `arm` label
    metrics: pd.DataFrame  # one row per logged step, with `arm` and `seed`
    arms: pd.DataFrame  # one row per arm: every figure of the report
    baseline: dict[str, str]  # model -> the baseline arm's label
    budget: dict[str, dict]  # model -> the budget its runs were compared at
    target: dict[str, float]  # model -> the loss that time-to-target is measured at
    tuning: pd.DataFrame | None  # one row per trial, or None
    tuning_summary: pd.DataFrame | None  # one row per study, or None

    @property
    def problems(self) -> pd.DataFrame:
        """Every run that did not complete: listed in the report, never silently dropped."""
        bad = self.runs[self.runs.status != "completed"]
        cols = ["arm", "seed", "status", "step", "total_steps", "diverged_at_step", "error", "run_id"]
        return bad[cols].sort_values(["arm", "seed"]).reset_index(drop=True)


def _fmt_value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else json.dumps(v)


def _label_arms(runs: pd.DataFrame) -> pd.Series:
    """'adamw lr=0.001', plus any other hyper-parameter that varies across that optimizer's arms."""
    many_models = runs.model.nunique() > 1
    labels = {}
    for (model, opt), g in runs.groupby(["model", "optimizer"], sort=False):
        hps = {h: json.loads(h) for h in g.hparams.unique()}
        keys = {k for d in hps.values() for k in d} - {"lr"}
        varying = sorted(k for k in keys if len({json.dumps(d.get(k)) for d in hps.values()}) > 1)
        for h, d in hps.items():
            parts = [opt, f"lr={_fmt_value(d.get('lr'))}"] + [f"{k}={_fmt_value(d.get(k))}" for k in varying]
            labels[(model, opt, h)] = (f"{model}/" if many_models else "") + " ".join(parts)
    return pd.Series([labels[k] for k in zip(runs.model, runs.optimizer, runs.hparams)], index=runs.index)


def _one_setting(runs: pd.DataFrame, what: str) -> dict[str, dict]:
    """model -> its runs' `what` config section, refusing a folder that mixes several."""
    out = {}
    for model, g in runs.groupby("model"):
        seen = {json.dumps(c.get(what), sort_keys=True) for c in g.config}
        if len(seen) > 1:
            raise ResultsError(
                f"runs of model {model!r} use {len(seen)} different {what} settings; a comparison is "
                f"made at one {what}: put each in its own results folder"
            )
        out[model] = json.loads(seen.pop())
    return out


def _mean(s: pd.Series) -> float:
    s = pd.to_numeric(s, errors="coerce")
    return float(s.mean()) if s.notna().any() else math.nan


def _arm_row(g: pd.DataFrame) -> dict:
    done = g[g.status == "completed"]
    loss = done.final_val_loss.astype(float).to_numpy()
    lo, hi = stats.bootstrap_mean_ci(loss)
    div = g[g.status == "diverged"]
    return {
        "model": g.model.iloc[0], "optimizer": g.optimizer.iloc[0], "lr": g.lr.iloc[0],
        "hparams": g.hparams.iloc[0], "n_runs": len(g), "n_completed": len(done),
        "n_diverged": len(div), "n_failed": int((g.status == "failed").sum()),
        "seeds": sorted(done.seed.tolist()),
        "diverged_at": sorted(int(s) for s in div.diverged_at_step.dropna()),
        "loss_mean": float(loss.mean()) if loss.size else math.nan,
        "loss_sd": float(loss.std(ddof=1)) if loss.size > 1 else math.nan,
        "loss_lo": float(lo), "loss_hi": float(hi),
        # Throughput and memory of the completed runs; state bytes do not depend on the outcome.
        "tokens": _mean(done.tokens), "opt_state_bytes": _mean(g.opt_state_bytes),
        "peak_mem_bytes": _mean(done.peak_mem_bytes),
        "peak_mem_kind": ", ".join(sorted(set(done.peak_mem_kind.dropna()))),
        "cuda_max_reserved_bytes": _mean(done.cuda_max_reserved_bytes),
        "tokens_per_s": _mean(done.tokens_per_s), "mfu": _mean(done.mfu),
        "time_fwd_bwd_s": _mean(done.time_fwd_bwd_s), "time_opt_s": _mean(done.time_opt_s),
        "wall_time_s": _mean(done.wall_time_s),
        "world_size": _mean(done.get("env.world_size", pd.Series(dtype=float))),
    }


def _final_by_seed(runs: pd.DataFrame, arm: str) -> pd.Series:
    done = runs[(runs.arm == arm) & (runs.status == "completed")]
    return done.set_index("seed").final_val_loss.astype(float)


def _val_curves(metrics: pd.DataFrame, runs: pd.DataFrame, arm: str, x,
                values: str = "val_loss") -> pd.DataFrame:
    """x (index) by seed (columns) table of the arm's completed runs, evaluation rows only."""
    ids = runs[(runs.arm == arm) & (runs.status == "completed")].run_id
    m = metrics[metrics.run_id.isin(ids) & metrics.val_loss.notna()]
    return m.pivot_table(index=x, columns="seed", values=values)


def _difference(runs: pd.DataFrame, arm: str, base: str) -> dict:
    x, b = _final_by_seed(runs, arm), _final_by_seed(runs, base)
    seeds = x.index.intersection(b.index)
    d = stats.paired_difference(x[seeds].to_numpy(), b[seeds].to_numpy())
    d["provisional"] = 0 < d["n_pairs"] < PAIRS_FOR_FULL_COVERAGE
    return d


def _speedup(runs: pd.DataFrame, metrics: pd.DataFrame, arm: str, base: str) -> dict:
    """Tokens the baseline's seed-averaged val curve needs to reach the arm's final loss / the arm's tokens.

    Bootstrapped over paired seeds: each resample averages the same seeds' baseline curves and
    arm losses. `speedup_where` is +1 when the arm ends below anything the baseline reached (the
    figure is then a lower bound), -1 when above the baseline's first evaluation (an upper bound).
    """
    curves = _val_curves(metrics, runs, base, "tokens")
    curves = curves[curves.index > 0].dropna()  # step 0 is the untrained model
    final = _final_by_seed(runs, arm)
    seeds = curves.columns.intersection(final.index)
    tokens = _mean(runs[(runs.arm == arm) & (runs.status == "completed")].tokens)
    if curves.empty or seeds.empty or not tokens > 0:
        return {}  # left NaN in the table
    c, f = curves[seeds].to_numpy().T, final[seeds].to_numpy()  # (n, T), (n,)
    need, where = stats.first_reach(curves.index, c.mean(0), f.mean(), log_x=True)
    out = {"baseline_tokens": float(need[0]), "speedup": float(need[0]) / tokens,
           "speedup_where": int(where[0]), "speedup_lo": math.nan, "speedup_hi": math.nan}
    if seeds.size > 1:
        idx, tail = stats.resample_indices(seeds.size), (1 - stats.LEVEL) / 2
        boot, _ = stats.first_reach(curves.index, c[idx].mean(1), f[idx].mean(1), log_x=True)
        out["speedup_lo"], out["speedup_hi"] = np.quantile(boot / tokens, [tail, 1 - tail])
    return out


def _time_to_target(runs: pd.DataFrame, metrics: pd.DataFrame, arm: str, target: float) -> dict:
    """Wall-clock seconds until the arm's seed-averaged val curve first reaches `target` (NaN if never)."""
    loss = _val_curves(metrics, runs, arm, "step").dropna()  # steps every seed evaluated at
    secs = _val_curves(metrics, runs, arm, "step", values="wall_time_s").loc[loss.index]
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


def compare(folder: str | Path, baseline: str = "adamw", target_loss: float | None = None) -> Comparison:
    """Load a results folder and compute every figure the report shows."""
    folder = Path(folder)
    runs, metrics = load_runs(folder)
    if not (runs.status == "completed").any():
        counts = ", ".join(f"{n} {s}" for s, n in runs.status.value_counts().items())
        raise ResultsError(f"{folder}: no completed runs to compare ({counts})")
    budget = _one_setting(runs, "budget")
    _one_setting(runs, "data")  # the same evaluation set too, or the losses are not comparable
    runs["arm"] = _label_arms(runs)
    metrics = metrics.merge(runs[["run_id", "arm", "seed"]], on="run_id", how="left")

    arms = pd.DataFrame([_arm_row(g) | {"arm": a} for a, g in runs.groupby("arm", sort=False)])
    arms = arms.sort_values(["model", "loss_mean"], na_position="last").reset_index(drop=True)
    base = {}
    for model, g in arms[(arms.optimizer == baseline) & (arms.n_completed > 0)].groupby("model"):
        base[model] = g.loc[g.loss_mean.idxmin(), "arm"]  # the best-tuned baseline arm
    if target_loss is None:  # by default: the time each arm needs to match the baseline's final loss
        target = {m: float(arms.loc[arms.arm == a, "loss_mean"].iloc[0]) for m, a in base.items()}
    else:
        target = {m: float(target_loss) for m in arms.model.unique()}

    extra = []
    for r in arms.itertuples():
        row = {"is_baseline": base.get(r.model) == r.arm}
        if r.model in base and r.n_completed and not row["is_baseline"]:
            row |= _difference(runs, r.arm, base[r.model]) | _speedup(runs, metrics, r.arm, base[r.model])
        if r.model in target and r.n_completed:
            row |= _time_to_target(runs, metrics, r.arm, target[r.model])
        extra.append(row)
    arms = pd.concat([arms, pd.DataFrame(extra, index=arms.index).reindex(columns=VS_BASELINE)], axis=1)

    tuning = load_tuning(folder)
    return Comparison(folder=folder, runs=runs, metrics=metrics, arms=arms, baseline=base,
                      budget=budget, target=target, tuning=tuning,
                      tuning_summary=_tuning_summary(tuning) if tuning is not None else None)
