"""The speedup across a ladder of model sizes and budgets, its trend, and its prediction at a target.

A *rung* is one model size N (GPT.num_params(), as the runs record it) at one budget D (tokens).
At every rung each arm's end-of-schedule speedup against the baseline, and its interval, come from
analysis.speedup through the folder's Comparisons (one per budget): nothing is recomputed here.

- The trend: log speedup linear in log N and log D, weighted least squares, each rung weighted by
  1/(se² + τ²): se is the rung's own seed uncertainty (its interval's half-width in log speedup
  over z), τ² the rungs' scatter about the trend beyond their seed noise (the method-of-moments
  estimate of a meta-regression, 0 when the rungs agree within their seeds; DerSimonian & Laird's
  estimator, generalised to a regression). When D does not vary
  independently of N (one budget for every size, or one tokens-per-parameter ratio), the fit is in
  log N alone, and says so. Only rungs with a value (measured or extrapolated) enter; a bound or
  a missing speedup is listed with why it is left out.
- The prediction interval: DRAWS bootstrap draws over rungs and seeds. Each draw resamples the
  rungs with replacement, each model size's budgets among themselves (every size stays in: the
  sizes are the ladder's design); each drawn rung is the trend plus its own departure (drawn from
  τ) plus a seed error drawn afresh from its seed uncertainty (speedup.py's rescaled seed
  bootstrap, through its interval: it returns no draws); the trend is refitted, and the prediction
  at the target adds a new rung's departure (the draw's τ). A draw whose rungs leave a coefficient
  undetermined (every size at one budget, in a fit with log D) is dropped and counted. Coverage of
  a held-out rung 10x past the largest, simulated in tests/test_scaling.py, is stated there.
- The target (results/<suite>/suite.json): {"target": {"params": N | "model": PRESET, "tokens": D,
  "device": (h100 by default), "world_size": (1)}, "extrapolation_limit": F}. Beyond F times the largest rung's
  parameters it refuses (null: no limit; absent: EXTRAPOLATION_LIMIT). Memory and time at the
  target are the planner's (runners/plan.py) for the target model on that device, per rank; with
  `params` alone there is no model to plan, and the verdict says memory needs `model`.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats as sps

from . import speedup
from .compare import Comparison

DRAWS, SEED = 2000, 0  # bootstrap draws and their seed: the same data, the same interval
LEVEL = speedup.LEVEL
EXTRAPOLATION_LIMIT = 1000.0  # times the largest rung's parameters, when the suite states none
# log D's spread left after its regression on log N below which D does not vary independently of
# N (0.05: 5% in tokens; budgets are whole steps, so one tokens-per-parameter ratio is not exact)
INDEPENDENT = 0.05
SE_FLOOR = 1e-3  # a rung whose interval has no width (identical seeds) is weighted as if it had this
FULL, BY_N = "log N and log D", "log N"
USED = ("measured", "extrapolated")  # the speedup labels that are values, not bounds


def human(n: float) -> str:
    """1.5e9 -> '1.5B', 830000 -> '830k'."""
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"


# ---------------------------------------------------------------- rungs

def _param_count(c: Comparison, model: str) -> float:
    n = pd.to_numeric(c.runs.param_count[c.runs.model == model], errors="coerce").dropna()
    return float(n.median()) if len(n) else math.nan


def _panel(params: float, tokens: int, ratios: list[float] | None) -> tuple[float, str]:
    """(key, label) of the budget panel a rung is drawn in: its declared tokens-per-parameter ratio
    (the nearest in log), else its tokens."""
    if ratios:
        r = min(ratios, key=lambda x: abs(math.log(tokens / params / x)))
        return float(r), f"{r:g} tokens/param"
    return float(tokens), f"{tokens:,} tokens"


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _why_left_out(r) -> str:
    if not _finite(r.speedup):
        return "no speedup" + (f": {r.speedup_note}" if isinstance(r.speedup_note, str) else "")
    if r.speedup_label not in USED:
        return f"a {r.speedup_label}, not a value"
    if not (_finite(r.speedup_lo) and _finite(r.speedup_hi) and r.speedup_lo > 0):
        return "no interval (fewer than 2 seeds, or unbounded)"
    return ""


def rungs(cs: list[Comparison], ratios: list[float] | None = None) -> pd.DataFrame:
    """One row per (arm, rung) of every arm compared with its model's baseline: arm (the family
    without its model), model, params, tokens, panel, speedup, lo, hi, label, se (of log speedup),
    used, why (left out of the trend)."""
    z = float(sps.norm.ppf(1 - (1 - LEVEL) / 2))
    rows = []
    for c in cs:
        for r in c.arms.itertuples():
            if r.model not in c.baseline or r.is_baseline:
                continue
            params = _param_count(c, r.model)
            key, label = _panel(params, c.tokens, ratios)
            why = _why_left_out(r) if np.isfinite(params) else "no parameter count recorded"
            se = math.log(r.speedup_hi / r.speedup_lo) / (2 * z) if not why else math.nan
            rows.append({"arm": r.family.removeprefix(f"{r.model}/"), "model": r.model, "params": params,
                         "tokens": c.tokens, "panel": key, "panel_label": label, "speedup": r.speedup,
                         "lo": r.speedup_lo, "hi": r.speedup_hi, "label": r.speedup_label,
                         "se": max(se, SE_FLOOR) if not why else math.nan, "used": not why, "why": why})
    cols = ["arm", "model", "params", "tokens", "panel", "panel_label", "speedup", "lo", "hi", "label", "se",
            "used", "why"]
    return pd.DataFrame(rows, columns=cols).sort_values(["arm", "params", "tokens"], ignore_index=True)


# ---------------------------------------------------------------- the fit, on batches of draws

def _wls(X: np.ndarray, y: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coefficients (B, p), τ² (B,)) of the weighted least squares y ≈ X·β per batch row (X: B x R
    x p, y and v: B x R), weights 1/(v + τ²), τ² the method-of-moments estimate of the scatter
    beyond v (Q against its R - p degrees of freedom)."""
    r, p = X.shape[-2:]

    def solve(w):
        xtw = X.transpose(0, 2, 1) * w[:, None, :]
        a = xtw @ X
        return np.linalg.solve(a, (xtw @ y[..., None]))[..., 0], a

    w0 = 1 / v
    b0, a0 = solve(w0)
    q = (w0 * (y - (X @ b0[..., None])[..., 0]) ** 2).sum(-1)
    xtw2x = (X.transpose(0, 2, 1) * (w0**2)[:, None, :]) @ X
    c = w0.sum(-1) - np.trace(np.linalg.solve(a0, xtw2x), axis1=-2, axis2=-1)
    tau2 = np.maximum(0.0, (q - (r - p)) / np.where(c > 0, c, np.inf)) if r > p else np.zeros(len(y))
    return solve(1 / (v + tau2[:, None]))[0], tau2


def _determined(X: np.ndarray) -> np.ndarray:
    """Per batch row: do the rungs determine every coefficient (the centred design has full rank)?"""
    xc = X[..., 1:] - X[..., 1:].mean(-2, keepdims=True)
    sv = np.linalg.svd(xc, compute_uv=False)
    return sv.min(-1) > 1e-8 * max(1.0, float(np.abs(xc).max(initial=0.0)))


@dataclass(frozen=True)
class Trend:
    """log speedup = β0 + β1·log(N/N_ref) [+ β2·log(D/D_ref)], with its bootstrap draws."""
    arm: str
    form: str  # FULL or BY_N
    why: str  # why this form
    coef: np.ndarray  # β
    tau: float  # the rungs' scatter about the trend beyond their seeds (log speedup)
    ref: tuple[float, float]  # (N_ref, D_ref): the rungs' geometric means
    rungs: int
    sizes: int
    largest: float  # the largest rung's parameters
    most_tokens: float  # the largest rung's tokens
    coef_draws: np.ndarray = field(repr=False)  # (draws, p)
    tau_draws: np.ndarray = field(repr=False)  # (draws,)
    noise: np.ndarray = field(repr=False)  # (draws,) a new rung's standard normal departure
    dropped: int = 0  # draws whose rungs left a coefficient undetermined

    def _x(self, params, tokens) -> np.ndarray:
        n = np.log(np.asarray(params, dtype=float) / self.ref[0])
        cols = [np.ones_like(n), n] + ([np.log(np.asarray(tokens, dtype=float) / self.ref[1])]
                                       if self.form == FULL else [])
        return np.stack(np.broadcast_arrays(*cols), -1)

    @property
    def exponents(self) -> tuple[float, float | None]:
        """(in N, in D): speedup ∝ N^β1 · D^β2 (β2 None for a fit in log N alone)."""
        return float(self.coef[1]), float(self.coef[2]) if self.form == FULL else None

    def exponent_intervals(self, level: float = LEVEL) -> tuple[tuple[float, float], tuple[float, float] | None]:
        """The exponents' bootstrap percentile intervals (in N, in D; None for a fit in log N alone)."""
        tail = (1 - level) / 2
        lo, hi = np.quantile(self.coef_draws[:, 1:], [tail, 1 - tail], axis=0)
        return (float(lo[0]), float(hi[0])), ((float(lo[1]), float(hi[1])) if self.form == FULL else None)

    def predict(self, params, tokens, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(speedup, lo, hi) at each (params, tokens): the fit, and the prediction interval of a new
        rung there (the draws' percentiles)."""
        x = self._x(params, tokens)
        value = np.exp(x @ self.coef)
        draws = x @ self.coef_draws.T + self.noise * np.sqrt(self.tau_draws)  # (..., draws)
        tail = (1 - level) / 2
        return value, np.exp(np.quantile(draws, tail, axis=-1)), np.exp(np.quantile(draws, 1 - tail, axis=-1))


def _form(log_n: np.ndarray, log_d: np.ndarray) -> tuple[str, str]:
    """FULL when log D varies apart from log N (and there are rungs enough), else BY_N, with why."""
    x = np.stack([np.ones_like(log_n), log_n], -1)
    rest = log_d - x @ np.linalg.lstsq(x, log_d, rcond=None)[0]
    spread = float(np.sqrt((rest**2).mean()))
    if spread < INDEPENDENT:
        same = np.ptp(log_d) < INDEPENDENT
        return BY_N, ("every rung is at one budget" if same else
                      "the rungs hold one tokens-per-parameter ratio") + \
            f": D does not vary independently of N (log D's spread apart from log N: {spread:.3f})"
    if len(log_n) < 4:
        return BY_N, f"{len(log_n)} rungs: a fit in log N and log D needs 4 (one residual degree of freedom)"
    return FULL, f"D varies apart from N (log D's spread apart from log N: {spread:.2f})"


def fit_trend(arm: str, params, tokens, value, se, *, draws: int = DRAWS, seed: int = SEED) -> Trend | str:
    """The trend of one arm's speedups (value, with se of log value) over its rungs (params, tokens),
    or why there is none."""
    params, tokens = np.asarray(params, dtype=float), np.asarray(tokens, dtype=float)
    y, se = np.log(np.asarray(value, dtype=float)), np.asarray(se, dtype=float)
    sizes = len(np.unique(params))
    if sizes < 2:
        return f"{sizes} model size{'s' if sizes != 1 else ''} with a speedup value: a trend needs 2 or more"
    ref = (math.exp(np.log(params).mean()), math.exp(np.log(tokens).mean()))
    form, why = _form(np.log(params / ref[0]), np.log(tokens / ref[1]))
    cols = [np.ones_like(y), np.log(params / ref[0])] + ([np.log(tokens / ref[1])] if form == FULL else [])
    X = np.stack(cols, -1)
    coef, tau2 = (v[0] for v in _wls(X[None], y[None], se[None] ** 2))
    rng = np.random.default_rng(seed)
    idx = np.empty((draws, len(y)), dtype=int)
    for n in np.unique(params):  # the rungs of each size, resampled among themselves
        cols = np.flatnonzero(params == n)
        idx[:, cols] = cols[rng.integers(0, cols.size, (draws, cols.size))]
    xs = X[idx]
    # Each drawn rung: the trend, its own departure (τ) and a fresh seed error (its se).
    ys = xs @ coef + math.sqrt(tau2) * rng.standard_normal(idx.shape) + se[idx] * rng.standard_normal(idx.shape)
    ok = _determined(xs)
    if not ok.any():
        return "every bootstrap draw of the rungs left a coefficient undetermined"
    coef_draws, tau_draws = _wls(xs[ok], ys[ok], se[idx][ok] ** 2)
    return Trend(arm, form, why, coef, math.sqrt(tau2), ref, len(y), sizes, float(params.max()),
                 float(tokens.max()), coef_draws, tau_draws, rng.standard_normal(int(ok.sum())), int((~ok).sum()))


# ---------------------------------------------------------------- the target

@dataclass(frozen=True)
class Target:
    params: float
    tokens: float
    model: str | None
    device: str
    world_size: int
    problem: str | None = None  # why there is no prediction at all


def target_of(declared: dict) -> Target | None:
    """The suite's declared target, None when it declares none."""
    t = declared.get("target")
    if not t:
        return None
    device, ws = t.get("device") or "h100", int(t.get("world_size") or 1)
    model, tokens = t.get("model"), t.get("tokens")
    if not tokens or tokens <= 0:
        return Target(math.nan, math.nan, model, device, ws, "target.tokens: missing: give the target's tokens")
    if model is not None:
        try:
            params = preset_params(model)
        except ValueError as e:
            return Target(math.nan, float(tokens), model, device, ws, f"target.model: {e}")
    elif t.get("params"):
        params = float(t["params"])
    else:
        return Target(math.nan, float(tokens), None, device, ws,
                      "target: give params (a parameter count) or model (a preset, for memory too)")
    return Target(params, float(tokens), model, device, ws)


def preset_params(model: str) -> float:
    """A preset's parameter count, as GPT.num_params() counts it (a meta-device model: no memory)."""
    from runners.plan import meta_model

    return float(meta_model({"name": model}).num_params())


def _run_config(cs: list[Comparison], model: str, optimizer: str) -> dict | None:
    """A completed run's resolved config of this optimizer on this model (its largest budget)."""
    for c in reversed(cs):
        done = c.runs[(c.runs.model == model) & (c.runs.optimizer == optimizer) & (c.runs.status == "completed")]
        if len(done):
            return done.config.iloc[0]
    return None


def plan_at(run_cfg: dict, target: Target):
    """The planner's Estimate of run_cfg's optimizer and budget shape on the target model, at the
    target's tokens, per rank on its device (runners/plan.py)."""
    cfg = copy.deepcopy(run_cfg)
    cfg.pop("branch", None)
    cfg["model"] = {"name": target.model}
    b = cfg["budget"]
    per_step = b["global_batch"] * b["seq_len"]
    b["steps"] = max(1, round(target.tokens / per_step))
    b["tokens"] = b["steps"] * per_step
    return _estimate(json.dumps(cfg, sort_keys=True), target.device, target.world_size)


@lru_cache(maxsize=None)
def _estimate(cfg: str, device: str, world_size: int):
    """runners.plan.estimate, once per config (the report and the dashboard each ask for it)."""
    from runners import plan as planning

    return planning.estimate(json.loads(cfg), device, world_size)


# ---------------------------------------------------------------- the ladder

@dataclass(frozen=True)
class Prediction:
    arm: str
    value: float
    lo: float
    hi: float
    factor: float  # the target's parameters over the largest rung's
    refused: str | None  # beyond the extrapolation limit: why and which key to raise
    state: tuple[int, int] | None  # optimizer state per rank at the target: (arm, baseline)
    peak: tuple[int, int] | None  # peak memory per rank: (arm, baseline)
    seconds: float | None  # the arm's run at the target on its device, as the planner puts it
    memory_note: str | None  # why memory is not given
    verdict: str


@dataclass
class Scaling:
    baseline: str  # the baseline's name across models (its family without the model)
    rungs: pd.DataFrame
    trends: dict[str, Trend | str]  # arm -> its trend, or why it has none
    target: Target | None
    limit: float | None  # the extrapolation limit in parameters (None: none)
    predictions: dict[str, Prediction]
    models: list[str]
    ratios: list[float] | None  # the declared tokens per parameter: the budget panels, else tokens


def _memory(cs, scale_rungs, arm: str, baseline: str, target: Target):
    """(state, peak, seconds, note) at the target from the planner."""
    if target.model is None:
        return None, None, None, "memory needs target.model (a preset): the target names params only"
    largest = scale_rungs[scale_rungs.arm == arm].sort_values("params").model.iloc[-1]
    opt_of = {f.removeprefix(f"{m}/"): o for c in cs for f, m, o in zip(c.arms.family, c.arms.model, c.arms.optimizer)}
    cfgs = [_run_config(cs, largest, opt_of.get(a)) for a in (arm, baseline)]
    if any(c is None for c in cfgs):
        return None, None, None, f"no completed run of {arm} and {baseline} on {largest} to take the settings from"
    try:
        mine, base = (plan_at(c, target) for c in cfgs)
    except (ValueError, RuntimeError, AssertionError) as e:  # an unknown device, no CUDA here, ...
        return None, None, None, f"the planner could not plan the target on {target.device}: {e}"
    return (mine.state, base.state), (mine.peak, base.peak), mine.seconds, None


def _verdict(arm: str, base: str, t: Trend, target: Target, p: dict) -> str:
    where = f"at {human(target.params)} parameters and {human(target.tokens)} tokens"
    if p["refused"]:
        return f"{where} {arm}: no prediction: {p['refused']}"
    mem = (f"with {p['state'][0] / p['state'][1]:.2f}× its optimizer memory" if p["state"] and p["state"][1]
           else f"(optimizer memory not planned: {p['memory_note'] or 'no state to compare'})")
    return (f"{where} {arm} is predicted at {p['value']:.2f}× [{p['lo']:.2f}, {p['hi']:.2f}] {base}'s data "
            f"efficiency {mem}; the trend ({t.form}) rests on {t.sizes} sizes up to {human(t.largest)} "
            f"parameters, an extrapolation of {_times(p['factor'])} in parameters"
            + (f" and {_times(target.tokens / t.most_tokens)} in tokens" if t.form == FULL else ""))


def _times(factor: float) -> str:
    """'471×', '2,363×', '1.5×'."""
    return f"{factor:,.0f}×" if factor >= 100 else f"{factor:.3g}×"


def _predict(cs, scale_rungs, arm: str, base: str, t: Trend, target: Target, limit: float | None) -> Prediction:
    factor = target.params / t.largest
    p = {"factor": factor, "refused": None, "state": None, "peak": None, "seconds": None, "memory_note": None,
         "value": math.nan, "lo": math.nan, "hi": math.nan}
    if limit is not None and factor > limit:
        p["refused"] = (f"the target's {human(target.params)} parameters are {factor:,.0f}× the largest rung's "
                        f"{human(t.largest)}, beyond the suite's extrapolation_limit of {limit:g}×: raise "
                        "extrapolation_limit (or set it to null) to extrapolate that far")
    else:
        value, lo, hi = (float(v) for v in t.predict(target.params, target.tokens))
        p |= {"value": value, "lo": lo, "hi": hi}
        p["state"], p["peak"], p["seconds"], p["memory_note"] = _memory(cs, scale_rungs, arm, base, target)
    return Prediction(arm, p["value"], p["lo"], p["hi"], factor, p["refused"], p["state"], p["peak"],
                      p["seconds"], p["memory_note"], _verdict(arm, base, t, target, p))


def ladder(cs: list[Comparison], declared: dict, *, draws: int = DRAWS, seed: int = SEED) -> Scaling | None:
    """The analysis across the folder's model sizes; None with fewer than 2 models."""
    models = sorted({m for c in cs for m in c.arms.model})
    if len(models) < 2:
        return None
    base = next((c.arms.family[c.arms.arm == a].iloc[0].removeprefix(f"{m}/")
                 for c in cs for m, a in c.baseline.items()), None)
    ratios = declared.get("tokens_per_param") or None
    r = rungs(cs, ratios)
    trends: dict[str, Trend | str] = {}
    for arm, g in r.groupby("arm", sort=False):
        used = g[g.used]
        trends[arm] = fit_trend(arm, used.params, used.tokens, used.speedup, used.se, draws=draws, seed=seed) \
            if len(used) else "no rung has a speedup value"
    target = target_of(declared)
    limit = declared.get("extrapolation_limit", EXTRAPOLATION_LIMIT)
    predictions = {}
    if target is not None and target.problem is None:
        predictions = {arm: _predict(cs, r, arm, base, t, target, limit)
                       for arm, t in trends.items() if isinstance(t, Trend)}
    return Scaling(base, r, trends, target, limit, predictions, models, ratios)


def trend_text(t: Trend | str, base: str) -> str:
    """The fitted law in words."""
    if isinstance(t, str):
        return f"no trend: {t}"
    bn, bd = t.exponents
    law = f"speedup ≈ {math.exp(t.coef[0]):.3f} × (N / {human(t.ref[0])})^{bn:+.3f}" + (
        f" × (D / {human(t.ref[1])})^{bd:+.3f}" if bd is not None else "")
    n_ci, d_ci = t.exponent_intervals()
    cis = f"the exponent in N {_exponent(bn, n_ci)}" + (f", in D {_exponent(bd, d_ci)}" if d_ci else "")
    return (f"{t.arm} against {base}: {law} ({cis}), weighted least squares in {t.form} over {t.rungs} rungs of "
            f"{t.sizes} sizes ({t.why}); scatter beyond the seeds τ = {t.tau:.3f} in log speedup; "
            f"{len(t.tau_draws)} bootstrap draws" + (f" ({t.dropped} dropped: their rungs left a coefficient "
                                                      "undetermined)" if t.dropped else ""))


def verdicts(s: Scaling) -> list[str]:
    """One line per arm at the target (or why there is none)."""
    if s.target is None:
        return ["No target declared (suite.json has no target): the trend is shown without a prediction; "
                "a suite declares target: {model: PRESET or params: N, tokens: D, device, world_size}."]
    if s.target.problem:
        return [f"No prediction: {s.target.problem}."]
    out = [p.verdict + "." for p in s.predictions.values()]
    out += [f"{arm}: no prediction ({t})." for arm, t in s.trends.items() if isinstance(t, str)]
    return out


# ---------------------------------------------------------------- tables and notes for the report

def _exponent(value: float, ci: tuple[float, float]) -> str:
    """'+0.008 [-0.050, +0.066]' (the bootstrap's 95% interval)."""
    return f"{value:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _interval(value: float, lo: float, hi: float) -> str:
    """'1.100× [1.050, 1.160]'; an end unbounded (a bound, a failed seed) as ∞; '—' without a value."""
    def end(v):
        return "∞" if v == math.inf else f"{v:.3f}" if _finite(v) else "—"
    return f"{value:.3f}× [{end(lo)}, {end(hi)}]" if _finite(value) else "—"


def rung_table(s: Scaling) -> pd.DataFrame:
    r = s.rungs
    return pd.DataFrame({
        "arm": r.arm, "model": r.model, "parameters N": [human(v) for v in r.params],
        "tokens D": [f"{v:,}" for v in r.tokens], "tokens/param": [f"{d / n:.3g}" for n, d in zip(r.params, r.tokens)],
        f"speedup vs {s.baseline} [95% CI]": [_interval(*v) + (f" {lab}" if lab else "")
                                              for *v, lab in zip(r.speedup, r.lo, r.hi, r.label)],
        "in the trend": ["yes" if u else f"no: {w}" for u, w in zip(r.used, r.why)]})


def trend_table(s: Scaling) -> pd.DataFrame:
    rows = []
    for arm, t in s.trends.items():
        p = s.predictions.get(arm)
        at = "—" if p is None else ("refused" if p.refused else _interval(p.value, p.lo, p.hi))
        if isinstance(t, str):
            rows.append({"arm": arm, "form": "—", "exponent in N [95% CI]": "—", "exponent in D [95% CI]": "—",
                         "τ": "—", "rungs / sizes": "—", "at the target [95% PI]": at, "note": t})
            continue
        (bn, bd), (n_ci, d_ci) = t.exponents, t.exponent_intervals()
        rows.append({"arm": arm, "form": t.form, "exponent in N [95% CI]": _exponent(bn, n_ci),
                     "exponent in D [95% CI]": "—" if bd is None else _exponent(bd, d_ci), "τ": f"{t.tau:.3f}",
                     "rungs / sizes": f"{t.rungs} / {t.sizes}", "at the target [95% PI]": at, "note": t.why})
    return pd.DataFrame(rows)


def target_table(s: Scaling) -> pd.DataFrame:
    """The planner's figures at the target, per rank, for each arm with a prediction."""
    from runners.plan import human_bytes, human_seconds

    rows = []
    for arm, p in s.predictions.items():
        if p.state is None:
            continue
        rows.append({"arm": arm, f"optimizer state per rank ({arm} / {s.baseline})":
                     f"{human_bytes(p.state[0])} / {human_bytes(p.state[1])} = {p.state[0] / p.state[1]:.2f}×",
                     "peak memory per rank": f"{human_bytes(p.peak[0])} / {human_bytes(p.peak[1])}",
                     f"one run on {s.target.device} × {s.target.world_size}": human_seconds(p.seconds)})
    return pd.DataFrame(rows)


def tables(s: Scaling) -> list[tuple[str, pd.DataFrame]]:
    out = [(f"Token-equivalent speedup against {s.baseline} at every rung (N: parameters as the runs count "
            "them; D: the budget's tokens)", rung_table(s)),
           ("The trend: log speedup linear in log N (and log D where it varies apart from N), weighted least "
            "squares; prediction interval from a bootstrap over rungs and seeds", trend_table(s))]
    mem = target_table(s)
    if not mem.empty:
        t = s.target
        out.append((f"At the target ({t.model}, {human(t.params)} parameters, {human(t.tokens)} tokens), from the "
                    f"planner (runners/plan.py), per rank on {t.device} × {t.world_size}", mem))
    return out


def notes(s: Scaling) -> list[str]:
    """The verdicts at the target, each trend in words, and how to read the section."""
    out = verdicts(s) + [trend_text(t, s.baseline) for t in s.trends.values()]
    limit = "none" if s.limit is None else f"{s.limit:g}× the largest rung's parameters"
    out.append(
        f"How to read this: each rung's speedup is its token-equivalent speedup against {s.baseline} at that "
        "model size and budget, as in each budget's section. The trend weights a rung by its seed uncertainty "
        "plus τ, the scatter of the rungs about the trend that their seeds do not explain. The prediction "
        f"interval ({LEVEL:.0%}) is for a new rung at the target: {DRAWS} bootstrap draws resample the rungs, "
        "draw each one's seed error afresh from its interval and its departure from τ, refit, and add a new "
        "rung's departure. The extrapolation assumes the trend stays linear in log N (and log D) past the "
        "largest rung, the same protocol (lr source, schedule, data) at the target, and that the baseline's "
        f"law at each size is right; extrapolation limit: {limit} (extrapolation_limit in the suite).")
    return out
