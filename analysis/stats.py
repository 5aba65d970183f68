"""Seed statistics: bootstrap intervals, paired differences with a verdict, detectable effects,
and reading a loss curve backwards (how many tokens / seconds until it reaches a loss).

Pure numpy on arrays; `analysis.compare` applies these to the results tables.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

LEVEL = 0.95  # every interval in the report
POWER = 0.80  # for the minimum detectable effect
BOOT_SEED = 0  # the bootstrap RNG is fixed: the same results give the same report
N_BOOT = 10_000


def resample_indices(n: int, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> np.ndarray:
    """(n_boot, n) indices of bootstrap resamples of n seeds, from a fixed RNG."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _expanded_alpha(n: int, level: float) -> float:
    """Tail mass for Hesterberg's expanded percentile interval.

    The plain percentile bootstrap is too narrow with few samples (its spread uses the
    1/n variance and normal tails); widening the quantiles so that they match
    sqrt(n/(n-1)) * t_{n-1} restores near-nominal coverage from n of about 5 upwards.
    """
    t = sps.t.ppf(1 - (1 - level) / 2, n - 1)
    return 2 * sps.norm.cdf(-math.sqrt(n / (n - 1)) * t)


def bootstrap_mean_ci(x, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = BOOT_SEED):
    """(lo, hi) bootstrap interval of the mean over the last axis of `x` (NaN with fewer than 2 values).

    `x` may be (..., n): each leading index is an independent sample (the resample indices are
    shared, which keeps a batch of simulated experiments fast and changes nothing per row).
    """
    x = np.asarray(x, dtype=float)
    n = x.shape[-1]
    if n < 2:
        nan = np.full(x.shape[:-1], np.nan)
        return nan, nan
    means = x[..., resample_indices(n, n_boot, seed)].mean(axis=-1)  # (..., n_boot)
    a = _expanded_alpha(n, level)
    lo, hi = np.quantile(means, [a / 2, 1 - a / 2], axis=-1)
    return lo, hi


def min_detectable_effect(sd: float, n: int, level: float = LEVEL, power: float = POWER) -> float:
    """(t_{1-a/2,n-1} + t_{power,n-1}) * sd / sqrt(n): the smallest true mean difference that a
    paired comparison of n seeds with this seed-to-seed sd detects with the given power.

    Student t rather than z quantiles: with 3-5 seeds the z version promises about twice the
    resolution the data have (and the intervals above are t-calibrated).
    """
    if n < 2 or not np.isfinite(sd):
        return math.nan
    t = sps.t(n - 1).ppf
    return (t(1 - (1 - level) / 2) + t(power)) * sd / math.sqrt(n)


def verdict(lo: float, hi: float) -> str:
    """Lower loss is better: 'better'/'worse' only when the interval of (X - baseline) excludes 0."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "n/a (fewer than 2 paired seeds)"
    if hi < 0:
        return "better"
    if lo > 0:
        return "worse"
    return "not distinguishable"


def paired_difference(x, base, level: float = LEVEL) -> dict:
    """Mean of x - base over paired seeds, its bootstrap interval, verdict and detectable effect."""
    d = np.asarray(x, dtype=float) - np.asarray(base, dtype=float)
    n = d.size
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    lo, hi = bootstrap_mean_ci(d, level)
    lo, hi = float(lo), float(hi)
    return {"n_pairs": n, "delta": float(d.mean()) if n else math.nan, "delta_lo": lo, "delta_hi": hi,
            "sd_delta": sd, "mde": min_detectable_effect(sd, n, level), "verdict": verdict(lo, hi)}


def first_reach(x, curves, targets, log_x: bool = False):
    """Where each curve first reaches its target, interpolated between logged points.

    x: (T,) increasing; curves: (R, T) or (T,); targets: (R,) or scalar. A curve "reaches" a
    target once its running minimum is at or below it. Returns (values, where) with where = 0
    inside the curve's range, +1 when the target is below everything the curve reached (value =
    x[-1], a lower bound), -1 when the first point already reaches it (value = x[0], an upper bound).
    log_x interpolates in log(x), the natural scale for loss against tokens.
    """
    x = np.asarray(x, dtype=float)
    curves = np.atleast_2d(np.asarray(curves, dtype=float))
    targets = np.broadcast_to(np.asarray(targets, dtype=float), curves.shape[:1])
    best = np.fmin.accumulate(curves, axis=1)
    hit = best <= targets[:, None]
    idx = np.where(hit.any(axis=1), hit.argmax(axis=1), x.size)
    where = np.where(idx == x.size, 1, np.where(idx == 0, -1, 0))
    i = np.clip(idx, 1, x.size - 1)
    rows = np.arange(curves.shape[0])
    y0, y1 = best[rows, i - 1], best[rows, i]
    frac = np.clip((y0 - targets) / np.where(y0 > y1, y0 - y1, 1.0), 0.0, 1.0)
    xs = np.log(x) if log_x else x
    val = xs[i - 1] + frac * (xs[i] - xs[i - 1])
    val = np.exp(val) if log_x else val
    val = np.where(where == 1, x[-1], np.where(where == -1, x[0], val))
    return val, where


def best_so_far(values) -> np.ndarray:
    """Running minimum that skips NaN (failed trials) and stays NaN until the first finite value."""
    return np.fmin.accumulate(np.asarray(values, dtype=float))


def stable_band(lrs, losses, diverged) -> tuple[float, float]:
    """The lr interval around the best trial in which no trial diverged: (lowest, highest) lr tried.

    The best trial is the lowest finite loss. The band extends to the nearest diverged lr on each
    side (exclusive) and spans the tried lrs in between; trials that failed for other reasons
    (loss NaN but not diverged) neither bound nor widen it.
    """
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    div = np.asarray(diverged, dtype=bool)
    if not np.isfinite(losses).any():
        return math.nan, math.nan
    best = lrs[np.nanargmin(losses)]
    above, below = lrs[div & (lrs > best)], lrs[div & (lrs < best)]
    hi_stop = above.min() if above.size else np.inf
    lo_stop = below.max() if below.size else -np.inf
    ok = lrs[np.isfinite(losses) & (lrs > lo_stop) & (lrs < hi_stop)]
    return float(ok.min()), float(ok.max())
