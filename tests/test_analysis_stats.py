"""Seed statistics and the loader, on synthetic results with known answers."""

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from analysis import stats
from analysis.compare import compare
from analysis.load import ResultsError, load_runs, load_tuning
from fixtures_results import (
    B, FLOOR, STEPS, T0, TOKENS_PER_STEP, planted_loss, write_run, write_suite, write_tuning,
)


# ---------------------------------------------------------------- differences and verdicts

def test_planted_difference_is_detected_both_ways():
    rng = np.random.default_rng(0)
    base = 2.0 + rng.normal(0, 0.01, 5)  # seed effects, shared by both arms (paired)
    worse = stats.paired_difference(base + 0.02 + rng.normal(0, 0.002, 5), base)
    better = stats.paired_difference(base - 0.02 + rng.normal(0, 0.002, 5), base)
    assert worse["verdict"] == "worse" and worse["delta_lo"] > 0
    assert better["verdict"] == "better" and better["delta_hi"] < 0
    assert better["delta"] == pytest.approx(-0.02, abs=0.003)


def test_equal_distributions_are_not_distinguishable():
    rng = np.random.default_rng(1)
    base = 2.0 + rng.normal(0, 0.01, 8)
    d = stats.paired_difference(base + rng.normal(0, 0.002, 8), base + rng.normal(0, 0.002, 8))
    assert d["verdict"] == "not distinguishable"
    assert d["delta_lo"] < 0 < d["delta_hi"]


def test_single_seed_has_no_interval_and_no_verdict():
    d = stats.paired_difference([2.1], [2.0])
    assert math.isnan(d["delta_lo"]) and d["verdict"].startswith("n/a")


def test_bootstrap_ci_coverage_is_near_nominal():
    # 300 simulated experiments of 10 normal seeds: the 95% interval should cover the true mean ~95%.
    x = np.random.default_rng(2).normal(3.0, 0.5, size=(300, 10))
    lo, hi = stats.bootstrap_mean_ci(x, n_boot=2000)
    coverage = np.mean((lo <= 3.0) & (3.0 <= hi))
    assert 0.90 <= coverage <= 0.98, coverage


def test_bootstrap_ci_is_reproducible():
    x = [2.01, 2.03, 1.99, 2.02]
    assert stats.bootstrap_mean_ci(x) == stats.bootstrap_mean_ci(x)


def test_minimum_detectable_effect_formula_and_power():
    t = sps.t(9).ppf
    assert stats.min_detectable_effect(2.0, 10) == pytest.approx((t(0.975) + t(0.8)) * 2.0 / math.sqrt(10))
    # A true effect of one MDE is detected ("worse") about 80% of the time.
    mde = stats.min_detectable_effect(1.0, 10)
    lo, _ = stats.bootstrap_mean_ci(np.random.default_rng(3).normal(mde, 1.0, (300, 10)), n_boot=2000)
    assert 0.70 <= np.mean(lo > 0) <= 0.90


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


def test_token_equivalent_speedup_on_planted_curves(tmp_path):
    suite = write_suite(tmp_path / "s", offsets={"adamw": 0.0, "sm3": 0.08, "adam_mini": -0.05},
                        diverged={}, seeds=(0, 1, 2, 3), noise_sd=0.0005)
    arms = compare(suite).arms.set_index("optimizer")
    # sm3 ends 0.08 above AdamW: AdamW (paired seed effects cancel) needs t* tokens for that loss.
    tokens = STEPS * TOKENS_PER_STEP
    t_star = T0 * (B / (float(planted_loss(tokens)) + 0.08 - FLOOR) - 1)
    sm3 = arms.loc["sm3"]
    assert sm3.speedup_where == 0
    assert sm3.speedup == pytest.approx(t_star / tokens, rel=0.02)
    assert sm3.speedup_lo <= t_star / tokens * 1.02 and sm3.speedup_hi >= t_star / tokens * 0.98
    # adam_mini ends below everything AdamW reached: only a lower bound (1.0x) can be given.
    assert arms.loc["adam_mini"].speedup_where == 1 and arms.loc["adam_mini"].speedup == 1.0


def test_time_to_target_on_planted_curves(tmp_path):
    suite = write_suite(tmp_path / "s", offsets={"adamw": 0.0, "adam_mini": -0.05, "sm3": 0.08},
                        diverged={}, noise_sd=0.0005)
    c = compare(suite)
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
    arms = compare(suite).arms.set_index("optimizer")
    assert arms.loc["adam_mini"].verdict == "better"
    assert arms.loc["sm3"].verdict == "worse" and arms.loc["sm3"].n_pairs == 7
    assert arms.loc["lamb"].verdict == "not distinguishable"
    assert bool(arms.loc["adamw"].is_baseline) and arms.loc["sm3"].diverged_at == [120]


def test_baseline_is_the_best_adamw_arm_and_labels_carry_lr(tmp_path):
    suite = tmp_path / "s"
    for s in (0, 1):
        write_run(suite, "adamw", s, lr=1e-3)
        write_run(suite, "adamw", s, lr=3e-3, offset=-0.02)
        write_run(suite, "adam_mini", s, lr=1e-3, offset=-0.05)
    c = compare(suite)
    assert c.baseline == {"nano": "adamw lr=0.003"}
    assert set(c.arms.arm) == {"adamw lr=0.001", "adamw lr=0.003", "adam_mini lr=0.001"}


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
    s = compare(suite).tuning_summary.set_index("optimizer").loc["adamw"]
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


def test_mixed_budgets_are_refused(tmp_path):
    write_run(tmp_path / "s", "adamw", 0)
    run = write_run(tmp_path / "s", "adam_mini", 0)
    doc = json.loads((run / "run.json").read_text())
    doc["config"]["budget"]["steps"] = 600
    (run / "run.json").write_text(json.dumps(doc))
    with pytest.raises(ResultsError, match="2 different budget settings"):
        compare(tmp_path / "s")
