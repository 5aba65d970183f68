"""The analysis across a ladder (analysis.scaling): the trend recovers a known law, its prediction
interval covers a held-out larger rung about as often as it says, a ladder of run folders drawn
from a known loss law gives back its planted data efficiency, and a target too far is refused."""

import json
import math

import numpy as np
import pytest

from analysis import scaling
from analysis.compare import compare
from analysis.report import render_md
from fixtures_results import shipped_tuned, write_run  # noqa: F401 (a fixture)

# A ladder: 4 sizes spanning 10x, 3 budgets in tokens per parameter (log D varies apart from log N).
N0, SIZES, RATIOS = 1e5, (1.0, 2.5, 5.0, 10.0), (5.0, 10.0, 20.0)
BETA = np.array([0.1, -0.03, 0.02])  # log speedup at (N0, 20 N0 tokens), per log N, per log D


def ladder_points(ratios=RATIOS):
    n = np.repeat(N0 * np.array(SIZES), len(ratios))
    return n, n * np.tile(ratios, len(SIZES))


def true_log_speedup(n, d):
    return BETA[0] + BETA[1] * np.log(n / N0) + BETA[2] * np.log(d / (20 * N0))


def draw(rng, n, d, tau, se0=0.04):
    """Measured speedups: the law, each rung's own departure (tau) and its seed error (se)."""
    se = se0 * rng.uniform(0.6, 1.5, n.size)
    return np.exp(true_log_speedup(n, d) + rng.normal(0, tau, n.size) + se * rng.standard_normal(n.size)), se


def test_the_trend_recovers_a_planted_law():
    n, d = ladder_points()
    value, se = draw(np.random.default_rng(0), n, d, tau=0.0, se0=0.005)
    t = scaling.fit_trend("adam_mini", n, d, value, se, draws=500)
    assert t.form == scaling.FULL and t.sizes == 4 and t.rungs == 12
    bn, bd = t.exponents
    assert bn == pytest.approx(BETA[1], abs=0.006) and bd == pytest.approx(BETA[2], abs=0.006)
    far = (100 * N0, 2000 * N0)
    value, lo, hi = t.predict(*far)
    assert lo < value < hi and value == pytest.approx(math.exp(true_log_speedup(*far)), rel=0.03)
    # One tokens-per-parameter ratio: D follows N, so the fit is in log N alone, and says why.
    n1, d1 = ladder_points((20.0,))
    value, se = draw(np.random.default_rng(1), n1, d1, tau=0.0, se0=0.005)
    t = scaling.fit_trend("adam_mini", n1, d1, value, se, draws=500)
    assert t.form == scaling.BY_N and "tokens-per-parameter" in t.why
    # log speedup in log N at D = 20 N: BETA[1] + BETA[2]
    assert t.exponents[0] == pytest.approx(BETA[1] + BETA[2], abs=0.006) and t.exponents[1] is None
    assert "a trend needs 2 or more" in scaling.fit_trend("x", [N0, N0], [1e6, 2e6], [1.1, 1.2], [0.02, 0.02])


REPS = 200


def test_the_prediction_interval_covers_a_held_out_larger_rung():
    """Held out: a rung at 10x the largest size (20 tokens per parameter), whose true speedup has
    its own departure from the law like every rung. Measured over REPS = 200 repetitions of the 12-rung
    ladder at 1000 draws each (about 6 s on a loaded 2-core machine): the 95% interval covered 0.935
    with a rung scatter tau = 0.03 and 0.985 with none, conservative when the rungs lie exactly on the
    law (a binomial sd is 0.015 at 200)."""
    rng = np.random.default_rng(2)
    n, d = ladder_points()
    held = (10 * N0 * SIZES[-1], 20 * 10 * N0 * SIZES[-1])
    rates = {}
    for tau in (0.03, 0.0):
        covered = 0
        for r in range(REPS):
            value, se = draw(rng, n, d, tau)
            truth = math.exp(true_log_speedup(*held) + rng.normal(0, tau))
            _, lo, hi = scaling.fit_trend("a", n, d, value, se, draws=1000, seed=r).predict(*held)
            covered += lo <= truth <= hi
        rates[tau] = covered / REPS
    print(f"\ncoverage of a held-out rung 10x past the largest, {REPS} repetitions: {rates}")
    assert all(0.90 <= c <= 0.99 for c in rates.values()), rates


# ---------------------------------------------------------------- a ladder of run folders

# L(N, D) = E + A/N^alpha + B/D^beta: the baseline's end-of-schedule loss; the arm reaches it at
# k(N) D, a data efficiency k(N) = K0 (N/N_SMALL)^GAMMA that falls with size.
E, A, ALPHA, BB, BETA_D = 1.7, 30.0, 0.3, 40.0, 0.3
K0, GAMMA = 1.3, -0.05
MODELS = {"nano": 200_000, "gpt2_small": 600_000, "gpt2_medium": 2_000_000}  # names; params are planted
STEPS = (100, 200, 400, 800)  # budgets 2x apart: the baseline's law is the fit a·D^-b + c
SEEDS = (0, 1, 2)


def loss(params, tokens):
    return E + A / params**ALPHA + BB / tokens**BETA_D


def write_ladder(folder, declared):
    rng = np.random.default_rng(0)
    for model, params in MODELS.items():
        k = K0 * (params / MODELS["nano"]) ** GAMMA
        for seed in SEEDS:
            effect = rng.normal(0, 0.003)  # the seed's, shared by both optimizers
            for steps in STEPS:
                for opt, factor in (("adamw", 1.0), ("adam_mini", k)):
                    run = write_run(folder, opt, seed, steps=steps, model=model)
                    doc = json.loads((run / "run.json").read_text())
                    tokens = doc["config"]["budget"]["tokens"]
                    final = loss(params, factor * tokens) + effect + rng.normal(0, 0.001)
                    doc["summary"] |= {"param_count": params, "final_test_loss": final, "final_val_loss": final}
                    (run / "run.json").write_text(json.dumps(doc))
    (folder / "suite.json").write_text(json.dumps({"baseline": {"optimizer": "adamw"}} | declared))
    return folder


DECLARED = {"target": {"model": "gpt2_medium", "tokens": 3e9, "device": "h100", "world_size": 1},
            "extrapolation_limit": 1000}


@pytest.fixture(scope="module")
def ladder_cs(tmp_path_factory, shipped_tuned):  # noqa: F811 (the fixture, imported)
    """The Comparisons of one ladder folder, shared by the tests below (compare takes seconds)."""
    return compare(write_ladder(tmp_path_factory.mktemp("ladder"), DECLARED))


def test_a_ladder_of_runs_gives_back_its_planted_data_efficiency(ladder_cs):
    declared, cs = DECLARED, ladder_cs
    s = scaling.ladder(cs, declared, draws=500)
    r = s.rungs
    assert s.baseline == "adamw" and set(r.arm) == {"adam_mini"} and len(r) == 12 and r.used.all()
    planted = K0 * (r.params / MODELS["nano"]) ** GAMMA
    assert np.allclose(r.speedup, planted, rtol=0.02)
    assert ((r.lo <= planted) & (planted <= r.hi)).mean() >= 0.75
    t = s.trends["adam_mini"]
    # Every model's budgets are the same tokens: D varies apart from N, and the law has no D term.
    assert t.form == scaling.FULL and t.exponents[0] == pytest.approx(GAMMA, abs=0.02)
    assert t.exponents[1] == pytest.approx(0.0, abs=0.02)
    (n_lo, n_hi), (d_lo, d_hi) = t.exponent_intervals()
    assert n_lo < GAMMA < n_hi and d_lo < 0.0 < d_hi and n_hi - n_lo < 0.2
    p = s.predictions["adam_mini"]
    params = scaling.target_of(declared).params  # gpt2_medium as the preset counts it
    assert p.refused is None and p.factor == pytest.approx(params / MODELS["gpt2_medium"])
    print("\n" + p.verdict)
    assert f"an extrapolation of {p.factor:,.0f}× in parameters and {3e9 / r.tokens.max():,.0f}× in tokens" in p.verdict
    assert p.lo < p.value < p.hi and p.value == pytest.approx(K0 * (params / MODELS["nano"]) ** GAMMA, rel=0.05)
    # The planner's optimizer state at the target: Adam-mini keeps about half of AdamW's.
    assert 0.45 < p.state[0] / p.state[1] < 0.55 and p.peak[0] < p.peak[1]
    assert "adam_mini is predicted at" in p.verdict and "0.50× its optimizer memory" in p.verdict
    assert "rests on 3 sizes up to 2M parameters" in p.verdict
    # The report gains its section, with the verdict (report.html: tests/test_dashboard_browser.py).
    md = render_md(cs)
    assert "## Across the ladder" in md and "adam_mini is predicted at" in md and "| gpt2_medium | 2M |" in md


def test_a_target_beyond_the_extrapolation_limit_is_refused(ladder_cs):
    declared = {"target": {"params": 1.5e9, "tokens": 3e10}, "extrapolation_limit": 100}
    s = scaling.ladder(ladder_cs, declared, draws=200)
    p = s.predictions["adam_mini"]
    assert p.refused and math.isnan(p.value)
    assert "750× the largest rung's 2M" in p.refused and "raise extrapolation_limit" in p.refused
    # null: no limit; params alone: no memory, and the verdict says memory needs the model.
    s = scaling.ladder(ladder_cs, declared | {"extrapolation_limit": None}, draws=200)
    p = s.predictions["adam_mini"]
    assert p.refused is None and np.isfinite(p.value) and "memory needs target.model" in p.verdict
    assert "an extrapolation of 750×" in p.verdict


def test_one_model_has_no_ladder_and_a_bad_target_is_said(tmp_path):
    folder = tmp_path / "one"
    for seed in SEEDS:
        for steps in STEPS[:2]:
            write_run(folder, "adamw", seed, steps=steps)
    assert scaling.ladder(compare(folder), {}) is None
    assert scaling.target_of({"target": {"model": "gpt9", "tokens": 1e9}}).problem.startswith("target.model")
    assert "tokens" in scaling.target_of({"target": {"params": 1e9}}).problem
