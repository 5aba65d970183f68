"""Cooldown branches held against cosine runs of their budgets (the suite key `cosine_check`).

A branch's final loss stands for what a run of its budget reaches. A cosine run of the same
budget, seed, lr and warmup differs from it in the schedule alone, so the paired gap (branch minus
cosine, seed by seed) says what the choice of schedule is worth at that budget. The gap is
"within the seed noise" when its mean is no larger than the seed-to-seed sd of the cosine runs'
final losses (what one more seed would move a loss by); otherwise the report says by how much.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

KEY = ["model", "optimizer", "hparams", "seed", "cfg.budget.tokens"]


def schedule_of(runs: pd.DataFrame) -> pd.Series:
    """Each run's budget.schedule."""
    return runs.config.map(lambda c: (c.get("budget") or {}).get("schedule"))


def set_aside(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the runs compared, the cosine runs set aside): a cosine run with a warmup-stable-decay twin
    (the same model, optimizer, hyper-parameters, seed and budget) checks the schedule; it is no
    arm of the comparison. A cosine run without one stays, and meets the one-schedule rule."""
    schedule = schedule_of(runs)
    wsd = pd.MultiIndex.from_frame(runs.loc[schedule == "wsd", KEY].astype(str))
    checks = (schedule == "cosine").to_numpy() & pd.MultiIndex.from_frame(runs[KEY].astype(str)).isin(wsd)
    return runs[~checks], runs[checks]


def gap(branch: np.ndarray, cosine: np.ndarray) -> dict:
    """The paired gap over seeds: mean, 95% t-interval, the cosine runs' seed sd, and the verdict."""
    d = branch - cosine
    n = len(d)
    mean, sd = float(d.mean()), float(cosine.std(ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    if n < 2:
        verdict = "one seed: no seed noise to hold the gap against"
    elif abs(mean) <= sd:
        verdict = "within the seed noise"
    else:
        side = "below" if mean < 0 else "above"
        verdict = f"not within the seed noise: the branch ends {abs(mean):.4f} {side} ({abs(mean) / sd:.1f}x the seed sd)"
    return {"seeds": n, "branch": float(branch.mean()), "cosine": float(cosine.mean()), "gap": mean,
            "gap_lo": mean - half, "gap_hi": mean + half, "seed_sd": sd, "verdict": verdict}


def gaps(compared: pd.DataFrame, checks: pd.DataFrame, loss: str) -> pd.DataFrame:
    """One row per (model, arm, budget) that has completed branches and cosine runs of the same
    seeds: the paired gap of their final `loss`. `compared` carries each run's `arm` label."""
    cols = ["model", "arm", "tokens", "seeds", "branch", "cosine", "gap", "gap_lo", "gap_hi", "seed_sd", "verdict"]
    done = lambda df: df[df.status == "completed"]  # noqa: E731  (an unfinished seed has no final loss)
    branches = done(compared[schedule_of(compared) == "wsd"])
    pairs = branches.merge(done(checks), on=KEY, suffixes=("", "_cos"))
    rows = []
    for (model, arm, tokens), g in pairs.groupby(["model", "arm", "cfg.budget.tokens"], sort=True):
        values = [pd.to_numeric(g[f], errors="coerce").to_numpy(float) for f in (loss, f"{loss}_cos")]
        rows.append({"model": model, "arm": arm, "tokens": int(tokens)} | gap(*values))
    return pd.DataFrame(rows, columns=cols)
