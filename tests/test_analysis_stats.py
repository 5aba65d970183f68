"""Seed statistics and the loader, on synthetic results with known answers."""

import itertools
import json
import math

import numpy as np
import pytest
import yaml
from scipy import stats as sps

import optimizers
from analysis import stats
from analysis.compare import compare
from analysis.load import ResultsError, load_runs, load_tuning
from fixtures_results import (  # noqa: F401 (shipped_tuned: a fixture)
    B, FLOOR, STEPS, T0, TOKENS_PER_STEP, shipped_tuned, write_run, write_suite, write_tuned,
    write_tuning,
)


# ---------------------------------------------------------------- the test behind the verdicts

def test_planted_difference_is_detected_both_ways():
    rng = np.random.default_rng(0)
    base = 2.0 + rng.normal(0, 0.01, 8)  # seed effects, shared by both arms (paired)
    worse = stats.paired_difference(base + 0.02 + rng.normal(0, 0.002, 8), base)
    better = stats.paired_difference(base - 0.02 + rng.normal(0, 0.002, 8), base)
    assert worse["verdict"] == "worse" and worse["delta_lo"] > 0 and worse["p_value"] <= 0.05
    assert better["verdict"] == "better" and better["delta_hi"] < 0
    assert better["delta"] == pytest.approx(-0.02, abs=0.003)


def test_equal_distributions_are_not_distinguishable():
    rng = np.random.default_rng(1)
    base = 2.0 + rng.normal(0, 0.01, 8)
    d = stats.paired_difference(base + rng.normal(0, 0.002, 8), base + rng.normal(0, 0.002, 8))
    assert d["verdict"] == "not distinguishable"
    assert d["delta_lo"] < 0 < d["delta_hi"]


@pytest.mark.parametrize("n", [1, 2, 5])
def test_below_six_seeds_there_is_no_verdict(n):
    # Even a huge, consistent difference: with n pairs the smallest two-sided p is 2/2^n > 5%.
    d = stats.paired_difference(np.full(n, 3.0) + np.arange(n) * 1e-3, np.full(n, 2.0))
    assert d["verdict"] == f"no verdict possible at n={n} (the test cannot reach 5% below 6 seeds)"
    assert d["p_value"] == pytest.approx(min(1.0, 2 / 2**n))
    assert (d["delta_lo"], d["delta_hi"], d["mde"]) == (-math.inf, math.inf, math.inf)


def test_no_pairs_is_not_a_verdict():
    d = stats.paired_difference([], [])
    assert d["verdict"] == "n/a (no paired seeds)" and math.isnan(d["delta"])


def test_exact_null_matches_enumerating_every_sign_flip():
    # Ties, zeros and failures (+-inf) included: the p-value is the share of the 2^n sign flips
    # of the (mid)ranks whose statistic is at least as extreme.
    rng = np.random.default_rng(4)
    for _ in range(200):
        d = rng.choice([-2.0, -1.0, 0.0, 1.0, 1.5, 3.0, math.inf, -math.inf], size=rng.integers(1, 9))
        nz = d[d != 0]
        ranks, signs = sps.rankdata(np.abs(nz)), np.sign(nz)
        flips = np.array(list(itertools.product([-1, 1], repeat=nz.size))).reshape(2**nz.size, nz.size)
        p = np.mean(np.abs(flips @ ranks) >= abs(signs @ ranks) - 1e-9)
        assert stats.signed_rank_test(d)[0] == pytest.approx(p)


def test_interval_is_the_test_inverted():
    rng = np.random.default_rng(5)
    for n in (6, 9):
        d = rng.normal(size=n)
        _, lo, hi = stats.shift_interval(d)
        for shift, rejected in ((lo - 1e-9, True), (lo + 1e-9, False), (hi - 1e-9, False), (hi + 1e-9, True)):
            assert (stats.signed_rank_test(d - shift)[0] <= stats.ALPHA) == rejected


def test_a_failed_seed_counts_against_its_arm():
    base = 2.0 + np.arange(8) * 0.01
    # The arm is worse by 0.01 on seven seeds and diverged on the eighth: the divergence is its
    # largest loss (the pair is kept), so it is worse, and the interval is open upwards.
    x = np.r_[base[:7] + 0.01 + np.arange(7) * 1e-4, math.inf]
    d = stats.paired_difference(x, base)
    assert d["n_pairs"] == 8 and d["verdict"] == "worse" and d["delta_hi"] == math.inf
    # Lower on seven seeds but diverged on the eighth: that seed outweighs any finite win.
    x = np.r_[base[:7] - 0.05 - np.arange(7) * 1e-4, math.inf]
    assert stats.paired_difference(x, base)["verdict"] == "not distinguishable"
    # With 12 seeds the test rejects despite the divergence, but the arm is never "better".
    base12 = 2.0 + np.arange(12) * 0.01
    x = np.r_[base12[:11] - 0.05 - np.arange(11) * 1e-4, math.inf]
    assert stats.paired_difference(x, base12)["verdict"] == "not better (lower loss, but diverged/failed seeds)"
    assert stats.paired_difference(base - 0.05 - np.arange(8) * 1e-4, base, arm_failed=True)["verdict"] \
        .startswith("not better")  # a failure on a seed the baseline has not finished counts too
    # The baseline diverging is a win of the arm on that seed; both failing, a tie (left out).
    assert stats.paired_difference(np.r_[base[:7] - 0.05, 2.0], np.r_[base[:7], math.inf])["verdict"] == "better"
    tie = stats.paired_difference(np.r_[base[:6] + 0.05, math.inf], np.r_[base[:6], math.inf])
    assert tie["n_pairs"] == 7 and tie["verdict"] == "worse" and tie["p_value"] == pytest.approx(2 / 2**6)


def test_minimum_detectable_effect_is_that_of_the_test():
    assert stats.min_detectable_effect(1.0, 5) == math.inf  # the test cannot reject at 5 pairs
    # At 6 pairs it rejects only when all six differences share a sign: Phi(mde)^6 = 0.8.
    assert stats.min_detectable_effect(1.0, 6) == pytest.approx(sps.norm.ppf(0.8 ** (1 / 6)), rel=0.01)
    assert stats.min_detectable_effect(2.0, 10) == pytest.approx(2 * stats.min_detectable_effect(1.0, 10))
    for n in (6, 8, 10):  # a true effect of one MDE is called "worse" 80% of the time
        mde = stats.min_detectable_effect(1.0, n)
        d = np.random.default_rng(n).normal(mde, 1.0, (4000, n))
        worse = np.mean(stats.paired_difference(d, np.zeros_like(d))["verdict"] == "worse")
        assert 0.77 <= worse <= 0.83, (n, worse)


NOISE = {"normal": lambda rng, size: rng.normal(size=size),
         "t3": lambda rng, size: rng.standard_t(3, size=size)}
EXPERIMENTS = 2000
FPR_BOUND = stats.ALPHA + 3 * math.sqrt(stats.ALPHA * (1 - stats.ALPHA) / EXPERIMENTS)  # 0.0646


def _calls(noise: str, n: int, effect: float, seed: int) -> np.ndarray:
    """Verdicts of EXPERIMENTS simulated experiments: n paired seeds, each seed's effect shared by
    both arms, per-run noise of the given law, and a true difference `effect` (in units of the
    difference's sd)."""
    rng = np.random.default_rng([seed, n])
    seed_effect = rng.normal(0, 0.01, (EXPERIMENTS, n))
    own = NOISE[noise](rng, (2, EXPERIMENTS, n)) * 0.002
    sd = 0.002 * math.sqrt(2 * (3.0 if noise == "t3" else 1.0))  # the sd of a difference of two draws
    base, x = 2.0 + seed_effect + own[0], 2.0 + seed_effect + own[1] + effect * sd
    return stats.paired_difference(x, base)["verdict"]


@pytest.mark.parametrize("noise", NOISE)
def test_false_positive_rate_holds_at_every_n(noise):
    rates = {}
    for n in range(2, 11):
        calls = _calls(noise, n, effect=0.0, seed=10)
        rates[n] = float(np.isin(calls, ["better", "worse"]).mean())
    print(f"\nfalse-positive rate, {noise} noise, {EXPERIMENTS} experiments:",
          " ".join(f"n={n}: {r:.3f}" for n, r in rates.items()))
    assert all(r <= FPR_BOUND for r in rates.values()), rates


@pytest.mark.parametrize("noise", NOISE)
def test_power_at_a_stated_effect(noise):
    power = {n: float(np.mean(_calls(noise, n, effect=1.5, seed=11) == "worse")) for n in range(2, 11)}
    print(f"\npower at a true difference of 1.5 sd of the paired difference, {noise} noise:",
          " ".join(f"n={n}: {p:.2f}" for n, p in power.items()))
    assert all(power[n] == 0 for n in range(2, stats.MIN_PAIRS))  # no verdict below 6 pairs
    assert power[10] > 0.9


def test_mean_interval_coverage_is_near_nominal():
    # 2000 simulated experiments of 5 normal seeds: the 95% t interval covers the true mean ~95%.
    lo, hi = stats.mean_ci(np.random.default_rng(2).normal(3.0, 0.5, size=(2000, 5)))
    assert 0.935 <= np.mean((lo <= 3.0) & (3.0 <= hi)) <= 0.965


# ---------------------------------------------------------------- reading curves backwards

def test_first_reach_inverts_a_planted_power_law():
    tokens = np.arange(1, 7) * 50 * TOKENS_PER_STEP  # evaluation every 50 steps
    curve = FLOOR + B / (1 + tokens / T0)
    # Log-token interpolation between evaluations 200k tokens apart: within 3% (linear: 9%).
    for t_true, rel in ((300_000.0, 0.03), (700_000.0, 0.01), (1_100_000.0, 0.005)):
        t, where = stats.first_reach(tokens, curve, FLOOR + B / (1 + t_true / T0), log_x=True)
        assert where[0] == 0 and t[0] == pytest.approx(t_true, rel=rel)
    t, where = stats.first_reach(tokens, curve, curve[-1] - 0.01)  # never reached: a lower bound
    assert where[0] == 1 and t[0] == tokens[-1]
    t, where = stats.first_reach(tokens, curve, curve[0] + 0.01)  # reached at once: an upper bound
    assert where[0] == -1 and t[0] == tokens[0]


def test_first_reach_uses_the_running_minimum():
    # A spike after reaching the target does not un-reach it.
    t, where = stats.first_reach([1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 5.0, 1.5], 2.0)
    assert (t[0], where[0]) == (2.0, 0)


def test_time_to_target_on_planted_curves(tmp_path):
    suite = write_suite(tmp_path / "s", offsets={"adamw": 0.0, "adam_mini": -0.05, "sm3": 0.08},
                        diverged={}, noise_sd=0.0005)
    [c] = compare(suite)
    arms = c.arms.set_index("optimizer")
    # The target is AdamW's final loss: AdamW needs its whole run (300 steps x 0.10 s).
    assert arms.loc["adamw"].time_to_target_s == pytest.approx(30.0)
    # adam_mini (0.11 s/step) reaches it at the step where its planted curve crosses the target.
    target = c.target["nano"] - np.mean([np.random.default_rng(s).normal(0, 0.01) for s in range(3)])
    steps = (T0 * (B / (target + 0.05 - FLOOR) - 1)) / TOKENS_PER_STEP
    assert arms.loc["adam_mini"].time_to_target_s == pytest.approx(steps * 0.11, rel=0.03)
    assert math.isnan(arms.loc["sm3"].time_to_target_s)  # never reaches AdamW's loss


def test_compare_verdicts_on_fixture_suite(tmp_path):
    suite = write_suite(tmp_path / "s", offsets={"adamw": 0.0, "adam_mini": -0.05, "sm3": 0.08, "lamb": 0.0},
                        seeds=tuple(range(8)), diverged={("sm3", 7): 120})
    [c] = compare(suite)
    arms = c.arms.set_index("optimizer")
    assert c.loss == "final_test_loss"  # the held-out split, when every run has it
    assert arms.loc["adam_mini"].verdict == "better"
    # The diverged seed stays in the pair, as sm3's loss on that seed.
    assert arms.loc["sm3"].verdict == "worse" and arms.loc["sm3"].n_pairs == 8
    assert arms.loc["sm3"].delta_hi == math.inf
    assert arms.loc["lamb"].verdict == "not distinguishable"
    assert bool(arms.loc["adamw"].is_baseline) and arms.loc["sm3"].diverged_at == [120]


def test_an_arm_that_diverged_is_never_better(tmp_path):
    suite = write_suite(tmp_path / "s", offsets={"adamw": 0.0, "adam_mini": -0.05},
                        seeds=tuple(range(8)), diverged={})
    write_run(suite, "adam_mini", 8, status="diverged", stop_step=200)  # a seed AdamW did not run
    [c] = compare(suite)
    mini = c.arms.set_index("optimizer").loc["adam_mini"]
    assert mini.verdict == "not better (lower loss, but diverged/failed seeds)" and mini.n_pairs == 8
    assert (mini.n_runs, mini.n_diverged) == (9, 1)


def test_without_a_test_loss_the_val_loss_is_compared(tmp_path):
    suite = write_suite(tmp_path / "s", diverged={})
    run = suite / "nano-adamw-lr0.001-s0" / "run.json"
    doc = json.loads(run.read_text())
    del doc["summary"]["final_test_loss"]  # a run from before the held-out split
    run.write_text(json.dumps(doc))
    assert compare(suite)[0].loss == "final_val_loss"


def _lr_runs(suite, arms, seeds=(0, 1), **kw):
    for opt, lr in arms:
        for s in seeds:
            write_run(suite, opt, s, lr=lr, **kw)
    return suite


def test_several_adamw_arms_and_no_rule_to_choose_are_refused(tmp_path):
    suite = _lr_runs(tmp_path / "s", [("adamw", 1e-3), ("adamw", 3e-3), ("adam_mini", 1e-3)])
    with pytest.raises(ResultsError) as e:
        compare(suite)  # never the best-mean arm by default
    msg = str(e.value)
    assert "the default baseline adamw matches 2 arms" in msg and "\n" not in msg
    assert "adamw lr=0.001" in msg and "adamw lr=0.003" in msg and "adam_mini lr=0.001" in msg
    assert f"python -m analysis.report {suite} --baseline 'adamw lr=" in msg
    [c] = compare(suite, baseline="adamw lr=0.003")
    assert c.baseline == {"nano": "adamw lr=0.003"}
    assert set(c.arms.arm) == {"adamw lr=0.001", "adamw lr=0.003", "adam_mini lr=0.001"}
    for bad, why in (("adamx", "--baseline 'adamx' matches no arm"), ("adamw", "matches 2 arms")):
        with pytest.raises(ResultsError, match=why):
            compare(suite, baseline=bad)
    assert compare(suite, baseline="adam_mini")[0].baseline == {"nano": "adam_mini lr=0.001"}


def test_the_tuned_adamw_arm_is_the_default_baseline(tmp_path):
    suite = _lr_runs(tmp_path / "s", [("adamw", 1e-3), ("adamw", 3e-3), ("adam_mini", 1e-3)])
    write_tuned(suite, "adamw", 3e-3, at_edge="high")
    [c] = compare(suite)
    assert c.baseline == {"nano": "adamw lr=0.003"}
    src = dict(zip(c.arms.arm, c.arms.lr_source))
    assert src == {"adamw lr=0.003": "tuned (best at the high edge of its range)", "adamw lr=0.001": "grid",
                   "adam_mini lr=0.001": "default" if optimizers.spec("adam_mini").defaults["lr"] == 1e-3 else "shared"}


def test_a_declared_baseline_comes_before_the_default(tmp_path):
    suite = _lr_runs(tmp_path / "s", [("adamw", 1e-3), ("adam_mini", 1e-3)])
    (suite / "suite.json").write_text(json.dumps({"baseline": {"optimizer": "adam_mini", "lr": "default"}}))
    assert compare(suite)[0].baseline == {"nano": "adam_mini lr=0.001"}
    assert compare(suite, baseline="adamw")[0].baseline == {"nano": "adamw lr=0.001"}  # --baseline wins
    # a declared baseline that did not run (only=[...] left it out): no baseline, not an error
    (suite / "suite.json").write_text(json.dumps({"baseline": {"optimizer": "lamb"}}))
    assert compare(suite)[0].baseline == {}


def test_lr_sources_from_the_run_folders(tmp_path, shipped_tuned):
    default = {o: optimizers.spec(o).defaults["lr"] for o in ("adamw", "lamb", "came", "sm3")}
    suite = _lr_runs(tmp_path / "s", [("adamw", 6e-4), ("came", 6e-4), ("lamb", 2e-2),
                                      ("sm3", default["sm3"]), ("adam_mini", 0.1)])
    tokens = STEPS * TOKENS_PER_STEP
    shipped_tuned.write_text(yaml.safe_dump({"s": {"nano": {str(tokens): {"adam_mini": {"lr": 0.1}}}}}))
    try:
        [c] = compare(suite)
    finally:
        shipped_tuned.unlink()
    src = dict(zip(c.arms.optimizer, c.arms.lr_source))
    assert src == {"adamw": "shared", "came": "shared", "lamb": "set", "sm3": "default", "adam_mini": "tuned"}


def test_several_budgets_give_one_comparison_each(tmp_path):
    suite = tmp_path / "s"
    for steps in (STEPS, 2 * STEPS):
        write_suite(suite, offsets={"adamw": 0.0, "adam_mini": -0.05}, seeds=tuple(range(6)), diverged={},
                    steps=steps)
    write_tuned(suite, "adam_mini", 1e-3)  # tuned at the first budget only
    short, long = compare(suite)
    assert (short.tokens, long.tokens) == (STEPS * TOKENS_PER_STEP, 2 * STEPS * TOKENS_PER_STEP)
    for c in (short, long):
        assert len(c.runs) == 12 and c.baseline == {"nano": "adamw lr=0.001"}
        assert c.arms.set_index("optimizer").loc["adam_mini"].verdict == "better"
    assert short.arms.set_index("optimizer").loc["adam_mini"].lr_source == "tuned"
    assert long.arms.set_index("optimizer").loc["adam_mini"].lr_source != "tuned"


def test_forward_backward_off_the_common_value_is_machine_noise(tmp_path):
    suite = write_suite(tmp_path / "s", offsets={"adamw": 0.0, "adam_mini": 0.0, "sm3": 0.0}, diverged={})
    for s in range(3):
        write_run(suite, "lamb", s, machine=2.0)  # the same work on a machine twice as busy
    [c] = compare(suite)
    noisy = dict(zip(c.arms.optimizer, c.arms.machine_noise))
    assert noisy == {"adamw": False, "adam_mini": False, "sm3": False, "lamb": True}
    assert c.fwd_bwd.loc["nano"].seconds == pytest.approx(0.1035, rel=0.02)  # the median run's
    arm = c.arms.set_index("optimizer").loc["adamw"]
    assert arm.fwd_bwd_s_lo < arm.fwd_bwd_s < arm.fwd_bwd_s_hi  # an interval over steps and seeds
    assert arm.tokens_per_s == pytest.approx(TOKENS_PER_STEP / 0.1, rel=0.02)


# ---------------------------------------------------------------- tuning helpers

def test_stable_band_and_best_so_far():
    lrs = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-5]
    losses = [2.2, 2.05, 2.0, 2.1, math.nan, math.nan]
    diverged = [False, False, False, False, True, True]
    assert stats.stable_band(lrs, losses, diverged) == (1e-4, 3e-3)
    np.testing.assert_array_equal(stats.best_so_far([math.nan, 2.5, math.nan, 2.1, 2.3]),
                                  [math.nan, 2.5, 2.5, 2.1, 2.1])


def test_tuning_summary_from_files(tmp_path):
    suite = write_suite(tmp_path / "s")
    write_tuning(suite, "adamw", [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], best_lr=1e-3, diverge_above=5e-3)
    s = compare(suite)[0].tuning_summary.set_index("optimizer").loc["adamw"]
    assert (s.best_lr, s.stable_lo, s.stable_hi, s.diverged) == (1e-3, 1e-4, 3e-3, 1)
    assert s.stable_decades == pytest.approx(math.log10(30))
    assert load_tuning(tmp_path / "nothing") is None


# ---------------------------------------------------------------- loading and refusing

def test_loader_flattens_config_and_reads_metrics(tmp_path):
    suite = write_suite(tmp_path / "s")
    runs, metrics = load_runs(suite)
    assert len(runs) == 9 and set(runs.status) == {"completed", "diverged"}
    r = runs.set_index("run_id").loc["nano-sm3-lr0.001-s2"]
    assert (r["cfg.budget.steps"], r["cfg.model.n_layer"], r.diverged_at_step) == (STEPS, 4, 120)
    assert math.isnan(r.final_val_loss) and r["env.git_commit"] == "abc1234"
    m = metrics[metrics.run_id == "nano-sm3-lr0.001-s2"]
    assert m.step.tolist()[:2] == [0, 10] and math.isnan(m.train_loss.iloc[-1])  # null -> NaN


def test_torn_last_metrics_line_is_dropped_but_a_bad_middle_line_refused(tmp_path):
    run = write_run(tmp_path / "s", "adamw", 0)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 301, "tra')
    _, metrics = load_runs(tmp_path / "s")
    assert metrics.step.max() == STEPS
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:3] + ["garbage"] + lines[3:]) + "\n")
    with pytest.raises(ResultsError, match="line 4 is not JSON"):
        load_runs(tmp_path / "s")


def test_unknown_schema_version_is_refused_in_one_line(tmp_path):
    write_suite(tmp_path / "s")
    run = write_run(tmp_path / "s", "adamw", 9, schema_version=2)
    with pytest.raises(ResultsError) as e:
        load_runs(tmp_path / "s")
    msg = str(e.value)
    assert "\n" not in msg and str(run) in msg and "schema_version 2" in msg and "schema_version 1" in msg


def test_schema_version_missing_is_refused(tmp_path):
    run = write_run(tmp_path / "s", "adamw", 0)
    doc = json.loads((run / "run.json").read_text())
    del doc["schema_version"]
    (run / "run.json").write_text(json.dumps(doc))
    with pytest.raises(ResultsError, match="schema_version None"):
        load_runs(tmp_path / "s")


def test_tuning_file_schema_is_checked(tmp_path):
    suite = write_suite(tmp_path / "s")
    path = write_tuning(suite, "adamw", [1e-3], best_lr=1e-3, diverge_above=1.0)
    path.write_text(json.dumps({**json.loads(path.read_text()), "schema_version": 7}))
    with pytest.raises(ResultsError, match="schema_version 7"):
        load_tuning(suite)


def test_mixed_budget_settings_at_one_budget_are_refused(tmp_path):
    write_run(tmp_path / "s", "adamw", 0)
    run = write_run(tmp_path / "s", "adam_mini", 0)
    doc = json.loads((run / "run.json").read_text())
    doc["config"]["budget"]["schedule"] = "wsd"  # same tokens, another schedule
    (run / "run.json").write_text(json.dumps(doc))
    with pytest.raises(ResultsError, match="2 different budget settings"):
        compare(tmp_path / "s")


def test_a_seed_with_two_data_orders_is_not_paired(tmp_path):
    write_run(tmp_path / "s", "adamw", 0)
    run = write_run(tmp_path / "s", "adam_mini", 0)
    doc = json.loads((run / "run.json").read_text())
    doc["config"]["data"]["seed"] = 5
    (run / "run.json").write_text(json.dumps(doc))
    with pytest.raises(ResultsError, match="seed 0 of model 'nano' trains on 2 different data orders"):
        compare(tmp_path / "s")
