"""The token-equivalent speedup from end-of-schedule points (Wen et al. 2025, arXiv 2509.02046).

Only a loss at the end of its schedule is comparable (rankings flip before the decay), so the
baseline's loss-vs-budget law is drawn through its final losses at several budgets: dedicated runs
or cooldown branches, one point per (budget, seed). The speedup of an arm at budget B is the tokens
D* the baseline needs to reach the arm's seed-mean final loss at B, divided by B.

- The law: with MIN_FIT budgets or more, L(D) = a·D^-b + c, least squares on the seed means (b
  profiled on a grid, then found by golden-section search; a >= 0); with fewer, an interpolation
  in log D through the seed means. A fit that does not describe the means is set aside for the
  interpolation, and the law says why: a floor c below 0 (no cross-entropy reaches it), or
  residuals beyond the means' noise (the mean of (residual / standard error)² over the K - 3
  residual degrees of freedom against F(K - 3, n - 1), n the fewest seeds of a budget, at
  1 - LEVEL, the standard errors being estimated from n seeds). It is conservative: seeds shared
  across budgets make the standard errors overstate the noise of a residual, and the fewest
  seeds' F has the heaviest tail (tests/test_speedup.py measures how often a true law is set
  aside). Small models early in training have such curves: the loss of a 264k-parameter byte
  model falls faster with each doubling of its budget, not slower. The interpolation is the
  monotone cubic (PCHIP), not the straight chord: a loss law is
  convex in log D, and the chord overstates D* between budgets (by 1.8% halfway between budgets 2x
  apart and 5-7% at 4x, for b = 0.3), more than a few seeds' interval; the cubic's error there is
  0.1% and under 1%. Either way the seed means must decrease with D, or no speedup is read off it.
- Inside the measured budgets D* is read off the law ("measured"). Beyond them the interpolation
  gives a bound (>= D_max/B, or <= D_min/B) with the loss gap beyond the range; the fit gives a
  value labelled "extrapolated" (a bound again where the arm is below the fit's floor c).
- The interval: a bootstrap over seeds. A seed is one (initial weights, data order) draw that every
  series holding it shares (the arm at B, the baseline at each budget; a cooldown branch shares its
  seed's stable run), so seeds are resampled jointly: seeds held by the same series form one stratum,
  resampled with its own size, so paired seeds move together and disjoint seed sets independently.
  The law is refitted (or re-interpolated) in every draw, so the interval carries its uncertainty.
  A percentile bootstrap of a mean undercovers at a handful of seeds: its variance is (n-1)/n of
  the unbiased one, its tails are normal, not Student's, and it cannot reach past the data (the
  expanded percentile interval, which widens only its quantiles, covered 75-77% at 3 seeds). So
  each resampled seed mean's deviation from the sample's is scaled by sqrt(n/(n-1))·t/z (t at
  n-1 degrees of freedom, n the fewest seeds of any series used) before the law is refitted, a
  rescaled bootstrap in the manner of Rao & Wu (1988); the interval is the draws' LEVEL percentile
  one. Coverage of a true 1.00x and 1.30x, 6 paired seeds (tests/test_speedup.py): 95-97% for both
  laws; in 200-300 simulated experiments each, 94-96% at 3 and 8 seeds, conservative for disjoint
  seed sets (97-99%) and 89% at 2 seeds; no interval from one seed.
- A diverged or failed seed is an infinite loss of its series (never dropped): an arm with one has
  an unbounded mean loss, a bound at the bottom of the range ([0, D_min/B]). The baseline's budgets
  with one are left out of its law, and the law says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps
from scipy.interpolate import PchipInterpolator

from .stats import LEVEL, first_reach

DRAWS, SEED = 2000, 0  # bootstrap draws and their seed: the same data, the same interval
MIN_FIT = 4  # budgets needed for the 3-parameter fit to keep a residual degree of freedom
EXPONENTS = np.geomspace(0.01, 4.0, 49)  # the fit's b, profiled on this grid before refining
KINDS = ("auto", "fit", "interpolation")
FINE = 32  # points per interval between budgets at which an interpolation is inverted
GOLDEN_STEPS = 40  # golden-section steps in log b after the grid: the bracket shrinks by 0.618^40


@dataclass(frozen=True)
class Law:
    """The baseline's final loss against its budget and the curve through it."""
    kind: str  # "fit" (a·D^-b + c), "interpolation" (monotone cubic in log D) or "none"
    tokens: np.ndarray  # the budgets of the law, increasing
    mean: np.ndarray  # seed-mean final loss at each
    sd: np.ndarray  # seed sd at each (NaN with one seed)
    n: np.ndarray  # seeds at each
    fit: tuple[float, float, float] | None  # (a, b, c) of L(D) = a·D^-b + c, D in tokens
    problem: str | None  # why no speedup can be read off it; None when one can
    left_out: str | None  # budgets the baseline diverged or failed at, left out
    misfit: str | None = None  # why a fit misses the means: set aside (auto), or kept as asked (fit)

    def loss(self, tokens) -> np.ndarray:
        """The law's loss at `tokens` (the interpolation only between the measured budgets)."""
        d = np.asarray(tokens, dtype=float)
        if self.fit is not None:
            a, b, c = self.fit
            return a * d ** -b + c
        if len(self.tokens) < 2:  # one budget left (the others failed): no curve through it
            return np.full(d.shape, math.nan)
        return PchipInterpolator(np.log(self.tokens), self.mean, extrapolate=False)(np.log(d))

    @property
    def residuals(self) -> np.ndarray | None:
        """Seed mean minus the fit at each budget; None for an interpolation (0 by construction)."""
        return None if self.fit is None else self.mean - self.loss(self.tokens)


@dataclass(frozen=True)
class Speedup:
    """D*/B with its interval; NaN throughout (and `note` says why) when there is no law."""
    value: float  # a bound's bound when label == "bound"
    lo: float  # 0 / inf: unbounded that way
    hi: float
    label: str  # "measured" | "bound" | "extrapolated"; "" without a value
    where: int  # 0 inside the baseline's budgets, +1 past its largest, -1 below its smallest
    baseline_tokens: float  # D*
    arm_loss: float  # the arm's seed-mean final loss at B (inf with a failed seed)
    gap: float  # beyond the range: the arm's loss minus the baseline's at the nearest end
    draws: int  # bootstrap draws that gave a value
    level: float
    law: Law
    note: str | None = None

    @property
    def beyond(self) -> float:
        """D* over the nearest end of the measured budgets (> 1 past the largest, < 1 below the
        smallest); NaN inside."""
        if self.where == 0 or not np.isfinite(self.baseline_tokens):
            return math.nan
        return self.baseline_tokens / self.law.tokens[-1 if self.where > 0 else 0]


# ---------------------------------------------------------------- the law on arrays of draws

def _grid_sse(u: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(R, J) residual sums of squares of y (R, K) ≈ a·exp(-b·u) + c, a >= 0, at each grid b: the
    exponentials do not depend on the draw, so the best (a, c) per b is one matrix product."""
    zc = np.exp(-np.outer(EXPONENTS, u))
    zc -= zc.mean(1, keepdims=True)
    yc = y - y.mean(1, keepdims=True)
    p = np.maximum(yc @ zc.T, 0.0)  # a decreasing law, or a flat one
    return (yc**2).sum(1, keepdims=True) - p**2 / (zc**2).sum(1)


def _at(u: np.ndarray, y: np.ndarray, b: np.ndarray):
    """(a, c, sse) of the least-squares y ≈ a·exp(-b·u) + c, a >= 0, with one b per row."""
    z = np.exp(-b[:, None] * u)
    zc, yc = z - z.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    a = np.maximum((yc * zc).sum(1), 0.0) / (zc**2).sum(1)
    return a, y.mean(1) - a * z.mean(1), ((yc - a[:, None] * zc) ** 2).sum(1)


def _fit(u: np.ndarray, y: np.ndarray):
    """(a, b, c) of the least-squares y ≈ a·exp(-b·u) + c per row of y (R, K): the best b of the
    grid, then a golden-section search in log b between its neighbours (to GOLDEN_STEPS), so that
    the residuals are the least squares' own and not the grid's."""
    grid = np.log(EXPONENTS)
    j = np.clip(_grid_sse(u, y).argmin(-1), 1, grid.size - 2)
    lo, hi = grid[j - 1], grid[j + 1]
    g = (math.sqrt(5) - 1) / 2
    x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
    f1, f2 = _at(u, y, np.exp(x1))[2], _at(u, y, np.exp(x2))[2]
    for _ in range(GOLDEN_STEPS):
        left = f1 <= f2  # the minimum lies in [lo, x2]
        lo, hi = np.where(left, lo, x1), np.where(left, x2, hi)
        x1, x2, f1, f2 = (np.where(left, hi - g * (hi - lo), x2), np.where(left, x1, lo + g * (hi - lo)),
                          np.where(left, np.nan, f2), np.where(left, f1, np.nan))
        new = np.where(left, x1, x2)
        sse = _at(u, y, np.exp(new))[2]
        f1, f2 = np.where(left, sse, f1), np.where(left, f2, sse)
    b = np.exp((lo + hi) / 2)
    a, c, _ = _at(u, y, b)
    return a, b, c


def _needed(kind: str, tokens: np.ndarray, y: np.ndarray, target: np.ndarray):
    """(D*, where) per draw: the tokens the law through y (R, K) needs to reach target (R,).
    where: 0 inside the budgets, +1 past the largest, -1 below the smallest; D* is NaN where a
    draw's fit is flat, inf where the target is below its floor."""
    if kind == "interpolation":  # where the cubic (its running minimum) first reaches it
        u = np.log(tokens)
        fine = np.r_[np.concatenate([np.linspace(u[i], u[i + 1], FINE, endpoint=False)
                                     for i in range(u.size - 1)]), u[-1]]
        return first_reach(np.exp(fine), PchipInterpolator(u, y, axis=1)(fine), target, log_x=True)
    ref = math.exp(np.log(tokens).mean())  # u = log(D/ref) keeps the exponentials near 1
    a, b, c = _fit(np.log(tokens / ref), y)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(a > 0, (target - c) / a, np.nan)
        d = np.where(z > 0, ref * z ** (-1 / b), np.where(np.isnan(z), np.nan, np.inf))
    where = np.where(d > tokens[-1], 1, np.where(d < tokens[0], -1, 0))
    return d, where


# ---------------------------------------------------------------- points -> series

class _Table(NamedTuple):
    tokens: np.ndarray  # (K,) increasing
    seeds: np.ndarray  # (U,) increasing
    loss: np.ndarray  # (K, U) final losses; +inf: diverged or failed; NaN: no run


def _outcomes(points: pd.DataFrame, what: str) -> _Table:
    """The points as a budget x seed table, refusing two runs in one cell."""
    missing = {"tokens", "seed", "loss"} - set(points.columns)
    if missing:
        raise ValueError(f"{what} points need columns tokens, seed, loss (missing: {', '.join(sorted(missing))})")
    tokens, ti = np.unique(points.tokens.to_numpy(dtype=float), return_inverse=True)
    seeds, si = np.unique(points.seed.to_numpy(), return_inverse=True)
    cell = ti.ravel() * seeds.size + si.ravel()
    twice = np.flatnonzero(np.bincount(cell) > 1)
    if twice.size:
        t, s = divmod(int(twice[0]), seeds.size)
        raise ValueError(f"{what} has two end-of-schedule points at {tokens[t]:,.0f} tokens on seed {seeds[s]}")
    loss = np.full(tokens.size * seeds.size, np.nan)
    loss[cell] = points.loss.to_numpy(dtype=float)
    return _Table(tokens, seeds, loss.reshape(tokens.size, seeds.size))


def _decreasing(tokens: np.ndarray, mean: np.ndarray) -> str | None:
    up = [f"{tokens[i]:,.0f} → {tokens[i + 1]:,.0f} tokens: {mean[i]:.4f} → {mean[i + 1]:.4f}"
          for i in range(len(mean) - 1) if mean[i + 1] >= mean[i]]
    return None if not up else ("the baseline's seed-mean final loss does not decrease with its budget ("
                                + "; ".join(up) + "): no law to read a speedup off")


def _law_kind(kind: str, budgets: int) -> str:
    if kind not in KINDS:
        raise ValueError(f"law {kind!r}: choose one of {', '.join(KINDS)}")
    if kind == "fit" and budgets < MIN_FIT:
        raise ValueError(f"a fit of a·D^-b + c needs {MIN_FIT} budgets or more; the baseline has {budgets}")
    if budgets < 2:
        return "none"
    return kind if kind != "auto" else "fit" if budgets >= MIN_FIT else "interpolation"


def _kept(table: _Table) -> tuple[_Table, str | None]:
    """The budgets the baseline has an outcome on every one of its seeds at, and what was left out."""
    failed = np.isposinf(table.loss).any(axis=1)
    if not failed.any():
        return table, None
    note = ("the baseline diverged or failed at " + ", ".join(f"{t:,.0f}" for t in table.tokens[failed])
            + " tokens: those budgets are left out of its law")
    return _Table(table.tokens[~failed], table.seeds, table.loss[~failed]), note


def _misfit(tokens: np.ndarray, mean: np.ndarray, sd: np.ndarray, n: np.ndarray,
            fit: tuple[float, float, float]) -> str | None:
    """Why the fit does not describe the seed means (its floor below 0, or residuals beyond their
    noise), or None."""
    a, b, c = fit
    if c < 0:
        return f"its floor c = {c:.3g} is below 0, which no loss reaches"
    se = sd / np.sqrt(n)
    if not np.all(np.isfinite(se) & (se > 0)):  # one seed somewhere: no noise to hold it against
        return None
    squares = float((((mean - (a * tokens ** -b + c)) / se) ** 2).sum())
    dof, seeds_dof = len(tokens) - 3, int(n.min()) - 1
    p = float(sps.f.sf(squares / dof, dof, seeds_dof))
    if p >= 1 - LEVEL:
        return None
    return (f"its residuals are beyond the seed means' noise (the mean squared residual over its standard error, "
            f"{squares / dof:.3g}, against F({dof}, {seeds_dof}): p = {p:.2g})")


def _law(table: _Table, kind: str) -> Law:
    table, left_out = _kept(table)
    tokens, loss = table.tokens, table.loss
    n = (~np.isnan(loss)).sum(axis=1)
    mean = np.nansum(loss, axis=1) / n
    sd = np.sqrt(np.nansum((loss - mean[:, None]) ** 2, axis=1) / np.where(n > 1, n - 1, np.nan))
    asked, kind = kind, _law_kind(kind, len(tokens))
    if kind == "none":
        where = f" ({tokens[0]:,.0f} tokens)" if len(tokens) else ""
        problem = (f"the baseline has end-of-schedule points at one budget only{where}: a speedup needs it at "
                   "several budgets (cooldown branches or dedicated runs)")
        return Law("none", tokens, mean, sd, n, None, problem, left_out)
    problem = _decreasing(tokens, mean)
    fit = misfit = None
    if kind == "fit" and problem is None:
        ref = math.exp(np.log(tokens).mean())
        a, b, c = (float(v[0]) for v in _fit(np.log(tokens / ref), mean[None, :]))
        fit = (a * ref**b, b, c)  # a·(D/ref)^-b = (a·ref^b)·D^-b
        misfit = _misfit(tokens, mean, sd, n, fit)
        if misfit and asked == "auto":
            kind, fit = "interpolation", None
    return Law(kind, tokens, mean, sd, n, fit, problem, left_out, misfit)


def baseline_law(base_points: pd.DataFrame, law: str = "auto") -> Law:
    """The baseline's law from its end-of-schedule points: a DataFrame of (tokens, seed, loss),
    one row per run, loss +inf where it diverged or failed. `law`: auto (a fit with MIN_FIT budgets
    or more, else interpolation), fit or interpolation."""
    return _law(_outcomes(base_points, "the baseline"), law)


# ---------------------------------------------------------------- the bootstrap

def _weights(held: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, seeds) resampling counts: seeds held by the same series (held: series x seeds) are
    one stratum, resampled with replacement at its own size."""
    w = np.empty((draws, held.shape[1]))
    stratum = np.unique(held.T, axis=0, return_inverse=True)[1].ravel()
    for k in np.unique(stratum):
        cols = np.flatnonzero(stratum == k)
        w[:, cols] = rng.multinomial(cols.size, np.full(cols.size, 1 / cols.size), size=draws)
    return w


def _means(w: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Weighted seed means (draws, series) of finite losses (series, seeds; NaN: no run)."""
    held = ~np.isnan(loss)
    return (w @ np.where(held, loss, 0.0).T) / (w @ held.T)


def _scale(n: int, level: float) -> float:
    """The factor on a resampled mean's deviation that turns the normal interval of a mean with the
    bootstrap's (n - 1)/n-shrunk variance into Student's t interval at n seeds."""
    q = 1 - (1 - level) / 2
    return math.sqrt(n / (n - 1)) * float(sps.t.ppf(q, n - 1) / sps.norm.ppf(q))


def _bootstrap(law: Law, loss: np.ndarray, full: np.ndarray, at_tokens: float, draws: int, level: float,
               seed: int) -> tuple[float, float, int]:
    """(lo, hi, draws that gave a value) of the speedup over rescaled seed resamples; NaN below 2 seeds."""
    held = ~np.isnan(loss)
    n = int(held.sum(axis=1).min())
    if n < 2:
        return math.nan, math.nan, 0
    m = full + _scale(n, level) * (_means(_weights(held, draws, np.random.default_rng(seed)), loss) - full)
    d, where = _needed(law.kind, law.tokens, m[:, :-1], m[:, -1])
    s = d / at_tokens
    if law.kind == "interpolation":  # a draw past the budgets is a bound: 0 or inf, to order right
        s = np.where(where > 0, np.inf, np.where(where < 0, 0.0, s))
    s = s[~np.isnan(s)]  # a draw whose fit came out flat
    tail = (1 - level) / 2
    # The outer sample quantiles: no interpolation towards an unbounded draw.
    lo, hi = float(np.quantile(s, tail, method="lower")), float(np.quantile(s, 1 - tail, method="higher"))
    if law.kind == "interpolation":  # an end among the bounds is known to pass that bound
        lo, hi = min(lo, law.tokens[-1] / at_tokens), max(hi, law.tokens[0] / at_tokens)
    return lo, hi, int(s.size)


def _stacked(law: Law, base: _Table, arm: _Table, at_tokens: float) -> tuple[np.ndarray, float]:
    """(series x seeds losses: the baseline at each budget of its law, then the arm at at_tokens;
    the arm's seed-mean loss)."""
    row = np.flatnonzero(np.isclose(arm.tokens, at_tokens))
    if not row.size:
        raise ValueError(f"the arm has no end-of-schedule point at {at_tokens:,.0f} tokens")
    seeds = np.union1d(base.seeds, arm.seeds)
    loss = np.full((law.tokens.size + 1, seeds.size), np.nan)
    loss[:-1, np.searchsorted(seeds, base.seeds)] = base.loss[np.searchsorted(base.tokens, law.tokens)]
    loss[-1, np.searchsorted(seeds, arm.seeds)] = arm.loss[row[0]]
    mine = loss[-1][~np.isnan(loss[-1])]
    return loss, float(mine.mean())


def _point(law: Law, d: float, where: int, arm_loss: float, at_tokens: float) -> tuple[float, str, float]:
    """(value, label, gap) of the point estimate: D*/B inside the budgets; past them the fit's
    extrapolation, or a bound where there is none (an interpolation, or below the fit's floor)."""
    if where == 0:
        return d / at_tokens, "measured", math.nan
    end = -1 if where > 0 else 0
    gap = arm_loss - law.mean[end]
    if law.kind == "fit" and d < math.inf:
        return d / at_tokens, "extrapolated", gap
    return law.tokens[end] / at_tokens, "bound", gap


def endpoint_speedup(base_points: pd.DataFrame, arm_points: pd.DataFrame, at_tokens: float, *,
                     law: str = "auto", draws: int = DRAWS, level: float = LEVEL, seed: int = SEED) -> Speedup:
    """The arm's token-equivalent speedup at budget `at_tokens` against the baseline's law.

    base_points, arm_points: DataFrames of (tokens, seed, loss), one row per end-of-schedule run
    (loss +inf where it diverged or failed); the arm's rows at `at_tokens` are used. law: as in
    baseline_law. `draws` bootstrap draws from `seed` give the `level` interval.
    """
    base = _outcomes(base_points, "the baseline")
    fitted = _law(base, law)
    loss, arm_loss = _stacked(fitted, base, _outcomes(arm_points, "the arm"), at_tokens)
    nan = math.nan
    if fitted.problem:
        return Speedup(nan, nan, nan, "", 0, nan, arm_loss, nan, 0, level, fitted, fitted.problem)
    if not np.isfinite(arm_loss):  # an unbounded mean loss reaches none of the baseline's
        bound = fitted.tokens[0] / at_tokens
        note = "; ".join(filter(None, ["the arm diverged or failed on a seed: its mean loss is unbounded",
                                       fitted.left_out]))
        return Speedup(bound, 0.0, bound, "bound", -1, nan, arm_loss, math.inf, 0, level, fitted, note)
    full = _means(np.ones((1, loss.shape[1])), loss)
    (d,), (where,) = _needed(fitted.kind, fitted.tokens, full[:, :-1], full[:, -1])
    lo, hi, used = _bootstrap(fitted, loss, full, at_tokens, draws, level, seed)
    value, label, gap = _point(fitted, float(d), int(where), arm_loss, at_tokens)
    return Speedup(float(value), lo, hi, label, int(where), float(d), arm_loss, float(gap), used, level,
                   fitted, fitted.left_out)
