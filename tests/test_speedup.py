"""The token-equivalent speedup from end-of-schedule points (analysis.speedup): its interval by
simulation, its labels beyond the measured budgets, and compare/report on folders of cooldown
branches and stable-phase runs."""

import importlib
import math

import numpy as np
import pandas as pd
import pytest

from analysis.report import write_report
from analysis.speedup import MIN_FIT, baseline_law, endpoint_speedup
from fixtures_results import (  # noqa: F401 (shipped_tuned: a fixture)
    B, FLOOR, STEPS, T0, TOKENS_PER_STEP, planted_loss, shipped_tuned, write_branches, write_run, write_suite,
    write_tuned,
)

compare_module = importlib.import_module("analysis.compare")
compare = compare_module.compare

# The simulated baseline law, L(D) = a·D^-b + c, over budgets 2x apart.
LAW_A, LAW_B, LAW_C = 40.0, 0.3, 1.8
THREE = (1e5, 2e5, 4e5)  # an interpolation
FIVE = (1e5, 2e5, 4e5, 8e5, 1.6e6)  # a fit (MIN_FIT budgets or more)
SEEDS, SEED_SD, RUN_SD = 6, 0.02, 0.004  # a seed's effect, shared by every run of it, and each run's own
REPS, DRAWS = 300, 1000
# Monte Carlo error of a 95% coverage over REPS repetitions: 3 binomial sds either side.
TOLERANCE = 3 * math.sqrt(0.95 * 0.05 / REPS)  # 0.038


def law(d):
    return LAW_A * np.asarray(d, dtype=float) ** -LAW_B + LAW_C


def points(budgets, rng, shared, factor=1.0, seeds=None) -> pd.DataFrame:
    """One run per (budget, seed): the law at factor x the budget (a data efficiency of `factor`),
    plus the seed's shared effect and the run's own noise."""
    seeds = np.arange(len(shared)) if seeds is None else np.asarray(seeds)
    d = np.repeat(np.asarray(budgets, dtype=float), seeds.size)
    s = np.tile(seeds, len(budgets))
    effect = np.tile(shared, len(budgets))
    return pd.DataFrame({"tokens": d, "seed": s, "loss": law(factor * d) + effect + rng.normal(0, RUN_SD, d.size)})


def simulate(budgets, at, factor, reps, seed):
    """reps experiments of SEEDS paired seeds: (share of intervals covering `factor`, median point
    estimate, labels)."""
    rng = np.random.default_rng(seed)
    covered, values, labels = 0, [], set()
    for r in range(reps):
        shared = rng.normal(0, SEED_SD, SEEDS)
        s = endpoint_speedup(points(budgets, rng, shared), points([at], rng, shared, factor), at, draws=DRAWS, seed=r)
        covered += s.lo <= factor <= s.hi
        values.append(s.value)
        labels.add(s.label)
    return covered / reps, float(np.median(values)), labels


@pytest.mark.parametrize("budgets, kind", [(THREE, "interpolation"), (FIVE, "fit")])
def test_an_arm_identical_to_the_baseline_covers_one_in_95_percent(budgets, kind):
    # The arm follows the baseline's own law with its own run noise, on the same seeds.
    assert baseline_law(points(budgets, np.random.default_rng(0), np.zeros(SEEDS))).kind == kind
    coverage, median, labels = simulate(budgets, budgets[len(budgets) // 2], 1.0, REPS, seed=1)
    print(f"\n{kind}: 1.00x covered in {coverage:.3f} of {REPS} (tolerance ±{TOLERANCE:.3f}), median {median:.3f}")
    assert abs(coverage - 0.95) <= TOLERANCE
    assert median == pytest.approx(1.0, abs=0.01) and labels == {"measured"}


@pytest.mark.parametrize("budgets", [THREE, FIVE])
def test_a_planted_data_efficiency_is_recovered(budgets):
    # The arm's loss at B is the baseline's law at 1.3 B: between two budgets for the interpolation.
    coverage, median, labels = simulate(budgets, budgets[1], 1.3, REPS // 2, seed=2)
    print(f"\n{len(budgets)} budgets: 1.30x covered in {coverage:.3f}, median {median:.3f}")
    assert coverage >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / (REPS // 2))
    assert median == pytest.approx(1.3, abs=0.02) and labels == {"measured"}


def test_paired_seeds_give_a_narrower_interval_than_disjoint_ones():
    rng = np.random.default_rng(3)
    shared = rng.normal(0, SEED_SD, 2 * SEEDS)  # seed effects dwarf the runs' own noise
    base = points(THREE, rng, shared[:SEEDS])
    paired = endpoint_speedup(base, points([2e5], rng, shared[:SEEDS]), 2e5)
    disjoint = endpoint_speedup(base, points([2e5], rng, shared[SEEDS:], seeds=range(SEEDS, 2 * SEEDS)), 2e5)
    for s in (paired, disjoint):
        assert s.lo <= 1.0 <= s.hi and s.draws == 2000
    assert paired.hi / paired.lo < 1.1 < disjoint.hi / disjoint.lo


def _quiet(budgets, at, loss_at):
    """A baseline on the law with little noise, and an arm at `at` whose loss is loss_at (+ noise)."""
    rng = np.random.default_rng(4)
    arm = pd.DataFrame({"tokens": at, "seed": range(SEEDS), "loss": loss_at + rng.normal(0, 1e-4, SEEDS)})
    return points(budgets, rng, np.zeros(SEEDS)).assign(loss=lambda p: law(p.tokens) + rng.normal(0, 1e-4, len(p))), arm


def test_beyond_an_interpolation_the_speedup_is_a_bound_that_says_how_far():
    base, arm = _quiet(THREE, 2e5, float(law(4e5)) - 0.05)  # below the baseline at its largest budget
    s = endpoint_speedup(base, arm, 2e5)
    assert (s.label, s.where, s.value) == ("bound", 1, 2.0)  # >= D_max / B
    assert s.gap == pytest.approx(-0.05, abs=1e-3) and s.lo >= 2.0 and s.hi == math.inf
    base, arm = _quiet(THREE, 1e5, float(law(1e5)) + 0.05)  # above it at its smallest
    s = endpoint_speedup(base, arm, 1e5)
    assert (s.label, s.where, s.value, s.lo) == ("bound", -1, 1.0, 0.0)
    assert s.gap == pytest.approx(0.05, abs=1e-3) and s.hi <= 1.0


def test_beyond_a_fit_the_speedup_is_extrapolated_and_labelled():
    base, arm = _quiet(FIVE, 1.6e6, float(law(2.4e6)))  # the baseline's law at 1.5 D_max
    s = endpoint_speedup(base, arm, 1.6e6)
    assert (s.label, s.where) == ("extrapolated", 1)
    assert s.value == pytest.approx(1.5, rel=0.02) and s.beyond == pytest.approx(1.5, rel=0.02)
    assert s.lo <= s.value <= s.hi
    base, arm = _quiet(FIVE, 1.6e6, LAW_C - 0.01)  # below the fit's floor: no tokens reach it
    s = endpoint_speedup(base, arm, 1.6e6)
    assert (s.label, s.where, s.value, s.baseline_tokens) == ("bound", 1, 1.0, math.inf)


def test_a_fit_recovers_a_planted_law_and_its_residuals():
    base, _ = _quiet(FIVE, 1e5, 2.0)
    fit = baseline_law(base)
    a, b, c = fit.fit
    assert (fit.kind, len(fit.tokens)) == ("fit", 5) and fit.problem is None
    assert b == pytest.approx(LAW_B, rel=0.05) and c == pytest.approx(LAW_C, abs=0.02)
    assert np.abs(fit.residuals).max() < 1e-3
    assert baseline_law(base, "interpolation").residuals is None
    with pytest.raises(ValueError, match=f"needs {MIN_FIT} budgets or more; the baseline has 3"):
        baseline_law(base[base.tokens <= 4e5], "fit")


def test_a_fit_that_misses_the_means_is_set_aside_for_the_interpolation_and_says_why():
    # A small model early in training: its loss falls faster with each doubling, not slower (these
    # are tiny_scaling's nano_m AdamW seed means), which no a·D^-b + c follows.
    rng = np.random.default_rng(7)
    means = {1.32e5: 2.514, 2.64e5: 2.465, 5.29e5: 2.347, 1.06e6: 1.984}
    base = pd.DataFrame([{"tokens": t, "seed": s, "loss": m + rng.normal(0, 0.01)}
                         for t, m in means.items() for s in range(SEEDS)])
    law = baseline_law(base)
    assert law.kind == "interpolation" and law.fit is None and law.misfit.startswith("its floor c = ")
    kept = baseline_law(base, "fit")  # asked for: kept, and the doubt is said
    assert kept.kind == "fit" and kept.misfit == law.misfit
    # Residuals beyond the noise with a floor above 0: a dip in the middle of a true law.
    base, _ = _quiet(FIVE, 1e5, 2.0)
    dipped = baseline_law(base.assign(loss=np.where(base.tokens == 4e5, base.loss - 0.02, base.loss)))
    assert dipped.kind == "interpolation" and "residuals are beyond the seed means' noise" in dipped.misfit


def test_a_true_law_is_set_aside_about_as_often_as_the_level_says():
    # Each budget's seeds alone (no effect shared across budgets, which would only make it rarer).
    rng = np.random.default_rng(5)
    for budgets in (FIVE[:4], FIVE):
        rate = np.mean([baseline_law(points(budgets, rng, np.zeros(SEEDS))).misfit is not None
                        for _ in range(REPS)])
        print(f"\n{len(budgets)} budgets: a true law set aside in {rate:.3f} of {REPS}")
        assert rate <= 0.05 + TOLERANCE


def test_failures_count_against_their_series():
    base, arm = _quiet(THREE, 2e5, float(law(2e5)))
    # The arm diverged on a seed: its mean loss is unbounded, at most D_min / B.
    s = endpoint_speedup(base, arm.assign(loss=arm.loss.where(arm.seed != 0, math.inf)), 2e5)
    assert (s.label, s.where, s.value, s.lo, s.hi) == ("bound", -1, 0.5, 0.0, 0.5)
    assert "diverged or failed on a seed" in s.note
    # The baseline diverged at one budget: that budget leaves its law, which says so.
    broken = base.assign(loss=base.loss.where((base.tokens != 4e5) | (base.seed != 0), math.inf))
    s = endpoint_speedup(broken, arm.assign(loss=arm.loss - float(law(2e5) - law(1.5e5))), 2e5)
    assert list(s.law.tokens) == [1e5, 2e5] and "400,000 tokens: those budgets are left out" in s.note
    # Two budgets: the cubic is the chord, which overstates D* of a convex law (here by 1.7%).
    assert s.label == "measured" and s.value == pytest.approx(0.75, rel=0.03)


def test_without_a_decreasing_law_or_a_second_budget_there_is_no_speedup():
    base, arm = _quiet(THREE, 2e5, 2.5)
    flat = base.assign(loss=np.where(base.tokens == 4e5, float(law(1e5)), base.loss))
    s = endpoint_speedup(flat, arm, 2e5)
    assert math.isnan(s.value) and s.label == "" and "does not decrease with its budget" in s.note
    s = endpoint_speedup(base[base.tokens == 2e5], arm, 2e5)
    assert math.isnan(s.value) and s.law.kind == "none"
    assert "one budget only (200,000 tokens): a speedup needs it at several budgets (cooldown branches" in s.note
    with pytest.raises(ValueError, match="two end-of-schedule points at 200,000 tokens on seed 0"):
        endpoint_speedup(pd.concat([base, base.iloc[[6]]]), arm, 2e5)
    with pytest.raises(ValueError, match="no end-of-schedule point at 300,000 tokens"):
        endpoint_speedup(base, arm, 3e5)


# ---------------------------------------------------------------- results folders

def _expected(budget_steps: int, offset: float) -> float:
    """The planted speedup: tokens at which the planted law reaches its own loss + offset, / B."""
    tokens = budget_steps * TOKENS_PER_STEP
    return T0 * (B / (float(planted_loss(tokens)) + offset - FLOOR) - 1) / tokens


def _branched(folder, offsets, budgets=(STEPS, 2 * STEPS, 4 * STEPS), seeds=range(SEEDS)):
    for opt, off in offsets.items():
        for s in seeds:
            write_branches(folder, opt, s, budgets=budgets, offset=off, noise_sd=0.0005)
    return folder


def test_speedups_from_cooldown_branches(tmp_path):
    suite = _branched(tmp_path / "s", {"adamw": 0.0, "adam_mini": -0.03, "sm3": 0.04})
    cs = compare(suite)
    assert [c.tokens for c in cs] == [STEPS * TOKENS_PER_STEP * k for k in (1, 2, 4)]
    mid = cs[1]
    assert mid.laws["nano"].kind == "interpolation" and len(mid.laws["nano"].tokens) == 3
    arms = mid.arms.set_index("optimizer")
    for opt, off in (("adam_mini", -0.03), ("sm3", 0.04)):
        r = arms.loc[opt]
        assert r.speedup_label == "measured" and r.speedup_lo <= r.speedup <= r.speedup_hi
        assert r.speedup == pytest.approx(_expected(2 * STEPS, off), rel=0.02)
    assert arms.loc["adam_mini"].speedup > 1 > arms.loc["sm3"].speedup
    top = cs[2].arms.set_index("optimizer").loc["adam_mini"]  # below the baseline's largest budget
    assert (top.speedup_label, top.speedup, top.speedup_where) == ("bound", 1.0, 1)
    assert top.speedup_gap == pytest.approx(-0.03, abs=0.005)


def test_stable_phase_runs_join_no_comparison(tmp_path):
    suite = _branched(tmp_path / "s", {"adamw": 0.0, "adam_mini": -0.03}, budgets=(STEPS, 2 * STEPS))
    write_run(suite, "adamw", 0, steps=500, schedule="constant", status="running", stop_step=200)
    cs = compare(suite)
    for c in cs:
        assert not (c.runs.config.map(lambda cfg: cfg["budget"]["schedule"]) == "constant").any()
        assert set(c.arms.n_runs) == {SEEDS} and c.problems.empty  # the running stable run is no problem
        assert len(c.stable) == 2 * SEEDS + 1
    costs = compare_module.branch_costs(cs)
    lone = costs.set_index("parent").loc["nano-adamw-lr0.001-s0-t500-stable"]
    assert (lone.status, lone.branches, lone.stable_tokens) == ("running", 0, 200 * TOKENS_PER_STEP)
    write_report(suite)
    md = (suite / "report.md").read_text()
    assert f"{2 * SEEDS + 1} stable-phase runs (constant schedule after warm-up) end at no budget" in md
    cost = md.split("## Memory and throughput")[1].split("## Divergences")[0]
    assert "| nano-adamw-lr0.001-s0-t500-stable | adamw lr=0.001 (stable phase) | 0 | running |" in cost
    with pytest.raises(compare_module.ResultsError, match="2 stable-phase runs .constant schedule. end at no"):
        only = tmp_path / "only"
        for s in range(2):
            write_run(only, "adamw", s, schedule="constant")
        compare(only)


def test_a_branch_and_a_dedicated_run_of_one_seed_are_refused(tmp_path):
    suite = _branched(tmp_path / "s", {"adamw": 0.0}, budgets=(STEPS, 2 * STEPS), seeds=[0])
    write_run(suite, "adamw", 0, schedule="wsd")  # the same budget, not a branch
    with pytest.raises(compare_module.ResultsError, match="adamw lr=0.001 has several runs of seed 0 at 1,228,800 "
                                                          "tokens .* a comparison takes one per seed"):
        compare(suite)


def test_a_branch_costs_its_cooldown_only(tmp_path):
    suite = _branched(tmp_path / "s", {"adamw": 0.0}, budgets=(100, 200, 400), seeds=[0])
    # A branch of a stable run this folder does not hold, stopped at step 190 of its cooldown from 160.
    write_run(suite, "adamw", 1, steps=200, schedule="wsd", status="running", stop_step=190,
              branch={"parent": "elsewhere", "from_step": 160})
    costs = compare_module.branch_costs(compare(suite)).set_index("parent")
    mine = costs.loc["nano-adamw-lr0.001-s0-t320-stable"]  # to the last branch point, 400 - 80
    assert (mine.status, mine.branches) == ("completed", 3)
    assert mine.budgets == [t * TOKENS_PER_STEP for t in (100, 200, 400)]
    assert mine.stable_tokens == 320 * TOKENS_PER_STEP
    assert mine.cooldown_tokens == (20 + 40 + 80) * TOKENS_PER_STEP  # steps - from_step of each branch
    assert mine.dedicated_tokens == 700 * TOKENS_PER_STEP
    other = costs.loc["elsewhere"]
    assert (other.status, other.stable_tokens, other.cooldown_tokens) == (
        "not in this folder", 160 * TOKENS_PER_STEP, 30 * TOKENS_PER_STEP)


def test_an_optimizer_tuned_per_budget_is_one_family(tmp_path):
    suite = tmp_path / "s"
    for steps, lr in ((STEPS, 1e-3), (2 * STEPS, 8e-4), (4 * STEPS, 6e-4)):
        for s in range(SEEDS):
            write_run(suite, "adamw", s, lr=lr, steps=steps, noise_sd=0.0005)
            for lr_grid in (1e-3, 3e-3):  # an lr grid: one family per lr
                write_run(suite, "adam_mini", s, lr=lr_grid, steps=steps, offset=-0.02, noise_sd=0.0005)
        write_tuned(suite, "adamw", lr, steps=steps)
    cs = compare(suite)
    assert {f for c in cs for f in c.arms.family} == {"adamw", "adam_mini lr=0.001", "adam_mini lr=0.003"}
    assert all(list(c.laws["nano"].tokens) == [c.tokens for c in cs] for c in cs)


def test_the_report_shows_loss_against_budget(tmp_path):
    suite = _branched(tmp_path / "s", {"adamw": 0.0, "adam_mini": -0.03},
                      budgets=(STEPS, 2 * STEPS, 4 * STEPS, 8 * STEPS))
    write_report(suite)
    md, page = (suite / "report.md").read_text(), (suite / "report.html").read_text()
    section = md.split("## Loss against budget")[1].split("## Memory and throughput")[0]
    assert "The baseline's law (adamw): the fit L(D) = " in section and "residual / s.e." in section
    assert "| adam_mini | 1.1" in section and " measured |" in section
    assert "extrapolated: the fit at " in section or "bound: its loss is " in section
    assert page.count("Plotly.newPlot(") == 4 * 6 + 1  # six per budget, and loss against budget
    assert "baseline law (adamw): fit a" in page  # the figure's legend
    assert "Cost of the cooldown branches" in md and "| total |" in md


def test_one_budget_gives_no_speedup_and_says_why(tmp_path):
    suite = write_suite(tmp_path / "s", seeds=tuple(range(SEEDS)), diverged={})
    [c] = compare(suite)
    assert c.arms[~c.arms.is_baseline.astype(bool)].speedup.isna().all()
    write_report(suite)
    md = (suite / "report.md").read_text()
    assert "No token-equivalent speedup: the baseline has end-of-schedule points at one budget only" in md
    assert "needs end-of-schedule runs at several budgets (cooldown branches or dedicated runs)" in md
    assert "optimistic" not in md
