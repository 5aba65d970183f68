"""The report files and the command line, from synthetic results folders."""

import json
import re

import numpy as np
import pytest

from analysis.report import SECTIONS, main, write_report
from fixtures_results import (  # noqa: F401 (shipped_tuned: a fixture)
    STEPS, shipped_tuned, write_run, write_suite, write_tuned, write_tuning,
)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """3 optimizers x 3 seeds, sm3's seed 2 diverged at step 120, plus two tuning studies."""
    s = write_suite(tmp_path_factory.mktemp("results") / "tiny")
    write_tuning(s, "adamw", list(np.logspace(-4, -2, 6)), best_lr=1e-3, diverge_above=5e-3)
    write_tuning(s, "adam_mini", list(np.logspace(-4, -2, 6)), best_lr=6e-4, diverge_above=2e-3)
    assert main([str(s)]) == 0
    return s


def test_html_is_one_self_contained_file_with_every_section(suite):
    page = (suite / "report.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc=", page)  # plotly.js is inlined, nothing is fetched
    assert not re.search(r"<link[^>]*\bhref=", page)
    assert page.count("Plotly.newPlot(") == 8  # curves x2, difference, memory, throughput, Pareto, tuning x2
    for sid, title in SECTIONS.items():
        assert f'<section id="{sid}"><h2>{title}</h2>' in page
    assert "No tuning ran" not in page


def test_report_states_the_budget_provenance_and_lists_the_divergence(suite):
    page, md = (suite / "report.html").read_text(), (suite / "report.md").read_text()
    for text in (page, md):
        assert "1,228,800 tokens = 300 steps × 32 sequences × 128 tokens; cosine schedule" in text
        assert "nano-sm3-lr0.001-s2" in text and "diverged" in text and "120/300" in text
        assert "abc1234" in text and "2.13.0+cpu" in text  # git commit, package versions
        assert "adamw lr=0.001" in text and "baseline" in text
    assert "nano-adamw: 6 trials" in page  # tuning budget in the provenance


def test_three_seeds_give_no_verdict_and_nothing_starred(suite):
    md = (suite / "report.md").read_text()
    none = "no verdict possible at n=3 (the test cannot reach 5% below 6 seeds)"
    assert re.search(rf"adam_mini lr=0\.001 \| \w+ \| 3/3 \| — \| .* \| {re.escape(none)} \| not reachable \|", md)
    assert re.search(r"sm3 lr=0\.001 \| \w+ \| 2/3 \| 1 of 3 diverged \| .* \| no verdict possible at n=3", md)
    assert "*" not in "".join(re.findall(r"\| (better|worse|not distinguishable)\S* \|", md))
    assert "better*" not in md and "worse*" not in md
    assert "How to read this: each verdict is the two-sided exact Wilcoxon signed-rank test at 5%" in md
    assert "sm3 lr=0.001: n=3, p=0.2500, MDE not reachable → no verdict possible" in md


def test_report_says_what_its_cost_figures_are(suite):
    md = (suite / "report.md").read_text()
    for text in ("tokens/s, global", "tokens/s per rank", "MFU per device", "fwd+bwd s/step",
                 "training steps of batch fetch, forward, backward, gradient clipping and optimizer step",
                 "evaluations, checkpoints, logging and start-up excluded", "time to target (training s)"):
        assert text in md
    assert re.search(r"\| 4\d,\d{3} \[\d\d,\d{3}, \d\d,\d{3}\] \|", md)  # adamw: a median and its spread


def test_terminal_table(suite, capsys):
    assert main([str(suite)]) == 0
    out = capsys.readouterr().out
    assert "adam_mini lr=0.001" in out and "no verdict possible at n=3" in out and "Did not complete:" in out
    assert f"wrote {suite / 'report.html'}" in out


def test_eight_seeds_give_verdicts_with_their_test(tmp_path):
    s = write_suite(tmp_path / "tiny", seeds=tuple(range(8)), diverged={("sm3", 2): 120})
    write_report(s)
    md = (s / "report.md").read_text()
    assert re.search(r"adam_mini lr=0\.001 \| .* \| 8 \| 0\.0078 \| better \| 0\.00\d\d \|", md)
    assert re.search(r"sm3 lr=0\.001 \| .* \| 1 of 8 diverged \| .* \+∞\] \| 8 \| 0\.0078 \| worse \|", md)
    assert "adam_mini lr=0.001: n=8, p=0.0078, MDE 0.00" in md


def test_without_tuning_the_section_is_skipped_cleanly(tmp_path):
    s = write_suite(tmp_path / "tiny", diverged={})
    write_report(s)
    page = (s / "report.html").read_text()
    assert "No tuning ran" in page and page.count("Plotly.newPlot(") == 6
    assert "Every run completed." in page
    assert "No tuning ran" in (s / "report.md").read_text()
    for text in (page, (s / "report.md").read_text()):  # one budget: no law, no speedup
        assert "One budget (1,228,800 tokens): no loss against budget" in text


def test_without_a_baseline_the_report_still_builds(tmp_path):
    s = write_suite(tmp_path / "tiny", offsets={"adam_mini": 0.0, "sm3": 0.05}, diverged={})
    write_report(s)
    assert "No baseline arm in this folder" in (s / "report.md").read_text()


@pytest.mark.parametrize("make, message", [
    (lambda d: d.mkdir(), "no runs"),
    (lambda d: None, "no such results folder"),
    (lambda d: write_run(d, "adamw", 0, status="diverged", stop_step=50), "no completed runs to compare (1 diverged)"),
    (lambda d: write_run(d, "adamw", 0, schema_version=3), "schema_version 3"),
])
def test_clear_one_line_errors(tmp_path, capsys, make, message):
    folder = tmp_path / "suite"
    make(folder)
    assert main([str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (folder / "report.html").exists()


@pytest.mark.parametrize("args, message", [
    (["--baseline", "adamx"], "--baseline 'adamx' matches no arm at 1,228,800 tokens; the arms: "),
    (["--baseline", "adamw lr=0.002"], "--baseline 'adamw lr=0.002' matches no arm"),
    ([], "the default baseline adamw matches 2 arms"),  # lr grid, nothing tuned or declared
])
def test_a_baseline_that_is_not_one_arm_is_refused(tmp_path, capsys, args, message):
    s = tmp_path / "suite"
    for lr in (1e-3, 3e-3):
        write_run(s, "adamw", 0, lr=lr)
    write_run(s, "sm3", 0)
    assert main([str(s), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert "adamw lr=0.001; " in err or "; adamw lr=0.001" in err  # the arms to choose from
    assert "--baseline '" in err  # and how to choose
    assert not (s / "report.html").exists() and not (s / "report.md").exists()


def test_lr_sources_and_the_chosen_baseline_are_shown(tmp_path):
    s = tmp_path / "tiny"
    for seed in range(2):
        for lr in (1e-3, 3e-3):
            write_run(s, "adamw", seed, lr=lr)
        write_run(s, "sm3", seed, lr=0.05)
    write_tuned(s, "adamw", 3e-3)
    write_report(s)
    md = (s / "report.md").read_text()
    assert "Baseline: adamw lr=0.003 (lr source: tuned)." in md
    assert "| adamw lr=0.001 | grid |" in md and "| sm3 lr=0.05 | set |" in md
    assert re.search(r"\| adamw lr=0\.003 \| tuned \| 2/2 \| .* \| baseline \|", md)


def test_several_budgets_get_a_part_each(tmp_path):
    s = tmp_path / "tiny"
    for steps in (STEPS, 2 * STEPS):
        write_suite(s, offsets={"adamw": 0.0, "adam_mini": -0.05}, diverged={}, steps=steps)
    assert main([str(s)]) == 0
    md, page = (s / "report.md").read_text(), (s / "report.html").read_text()
    for text in (md, page):
        assert "At 1,228,800 tokens" in text and "At 2,457,600 tokens" in text
        assert "2,457,600 tokens = 600 steps" in text
    assert md.count("**Final test loss and comparison with the baseline**") == 2
    assert page.count("Plotly.newPlot(") == 13  # six figures per budget, and loss against budget
    # Two budgets: the speedup is read off the baseline's two end-of-schedule points, inside them
    # at the first budget, a bound that says how far beyond at the second.
    section = md.split("## Loss against budget")[1].split("## Memory and throughput")[0]
    assert "The baseline's law (adamw): the line through the seed means of its 2 budgets, in log tokens" in section
    assert re.search(r"\| adam_mini \| \d\.\d\d× \[\d\.\d\d, \d\.\d\d\] measured \| "
                     r"≥ 1\.00× \[1\.00, ∞\] bound: its loss is 0\.0[45]\d\d below the baseline's "
                     r"at its largest budget \(2,457,600 tokens\) \|", section)


def test_a_baseline_that_failed_at_all_but_one_budget_still_gets_a_report(tmp_path):
    """Branches that could not start (their parents ran without keeping checkpoints) fail: the
    baseline's law then has one budget, and the report says no speedup can be read, not crash."""
    s = tmp_path / "tiny"
    write_suite(s, offsets={"adamw": 0.0, "adam_mini": -0.05}, diverged={}, steps=STEPS)
    for seed in (0, 1, 2):
        for optimizer in ("adamw", "adam_mini"):
            write_run(s, optimizer, seed, steps=2 * STEPS, status="failed", error="RunError: no kept checkpoint")
    assert main([str(s)]) == 0
    assert "Token-equivalent speedup" in (s / "report.md").read_text()


def test_twelve_arms_plot(tmp_path):
    s = tmp_path / "tiny"
    for opt in ("adamw", "adam_mini", "sm3", "lamb"):
        for lr in (3e-4, 1e-3, 3e-3):
            write_run(s, opt, 0, lr=lr)
    write_report(s, baseline="adamw lr=0.001")
    page = (s / "report.html").read_text()
    assert page.count("Plotly.newPlot(") == 6
    assert "rgba(102,194,165,0.18)" in page  # the 11th arm's band, from Set2's rgb(...) colours


def test_machine_noise_is_flagged_not_shown_as_slower(tmp_path):
    s = write_suite(tmp_path / "tiny", offsets={"adamw": 0.0, "adam_mini": 0.0, "sm3": 0.0}, diverged={})
    for seed in range(3):
        write_run(s, "lamb", seed, machine=2.0)
    write_report(s)
    cost = {line.split(" | ")[0]: line for line in (s / "report.md").read_text().splitlines() if "cpu_rss" in line}
    assert cost.pop("| lamb lr=0.001").endswith("| machine noise: not comparable |")
    assert len(cost) == 3 and all(line.endswith("| yes |") for line in cost.values())
    assert "machine noise " in (s / "report.html").read_text()  # the tokens/s bar says so


def test_arms_without_a_completed_run_and_unfinished_runs_are_listed(tmp_path):
    s = write_suite(tmp_path / "tiny", offsets={"adamw": 0.0, "lamb": 0.0},
                    diverged={("lamb", seed): 40 for seed in range(3)})
    write_run(s, "sm3", 0, status="failed", stop_step=20, error="RuntimeError: out of memory")
    write_run(s, "sm3", 1, status="running", stop_step=30)
    write_report(s)
    md = (s / "report.md").read_text()
    assert "lamb lr=0.001: no completed run (3 diverged)" in md
    assert "sm3 lr=0.001: no completed run (1 failed, 1 running)" in md
    assert "| 3 of 3 diverged |" in md and "| 1 of 2 failed |" in md
    assert "RuntimeError: out of memory" in md and "| running |" in md
    assert not re.search(r"\bnan\b", (s / "report.html").read_text().split("<main>")[1], re.IGNORECASE)


def test_gpu_figures_and_mixed_provenance_are_shown(tmp_path):
    s = write_suite(tmp_path / "tiny", diverged={})
    for run in s.glob("*/run.json"):
        doc = json.loads(run.read_text())
        doc["summary"] |= {"mfu": 0.41, "peak_mem_kind": "cuda_allocated", "cuda_max_reserved_bytes": 6 * 2**30}
        doc["env"]["world_size"] = 2
        if "adamw" in run.parent.name:
            doc["env"] |= {"git_commit": "def5678", "git_dirty": True}
        run.write_text(json.dumps(doc))
    write_report(s)
    md = (s / "report.md").read_text()
    assert "| 41.0% |" in md and "| 6144.0 |" in md and "cuda_allocated" in md
    assert re.search(r"\| 2 \| 4\d,\d{3} \[[\d,]+, [\d,]+\] \| 20,\d{3} \[", md)  # global, then per rank
    assert "2 different git commits" in md and "uncommitted changes" in md
    assert "MFU 41.0%" in (s / "report.html").read_text()
