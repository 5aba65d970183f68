"""The report files and the command line, from synthetic results folders."""

import json
import re

import numpy as np
import pytest

from analysis.report import SECTIONS, main, write_report
from fixtures_results import write_run, write_suite, write_tuning


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
    assert re.search(r"adam_mini lr=0\.001 \| 3/3 \| .* \| better\*", md)  # planted -0.05: better
    assert re.search(r"sm3 lr=0\.001 \| 2/3 \| .* \| worse\*", md)  # planted +0.08: worse


def test_terminal_table(suite, capsys):
    assert main([str(suite)]) == 0
    out = capsys.readouterr().out
    assert "adam_mini lr=0.001" in out and "better*" in out and "Did not complete:" in out
    assert f"wrote {suite / 'report.html'}" in out


def test_without_tuning_the_section_is_skipped_cleanly(tmp_path):
    s = write_suite(tmp_path / "tiny", diverged={})
    write_report(s)
    page = (s / "report.html").read_text()
    assert "No tuning ran" in page and page.count("Plotly.newPlot(") == 6
    assert "Every run completed." in page
    assert "No tuning ran" in (s / "report.md").read_text()


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


def test_arms_without_a_completed_run_and_unfinished_runs_are_listed(tmp_path):
    s = write_suite(tmp_path / "tiny", offsets={"adamw": 0.0, "lamb": 0.0},
                    diverged={("lamb", seed): 40 for seed in range(3)})
    write_run(s, "sm3", 0, status="failed", stop_step=20, error="RuntimeError: out of memory")
    write_run(s, "sm3", 1, status="running", stop_step=30)
    write_report(s)
    md = (s / "report.md").read_text()
    assert "lamb lr=0.001: no completed run (3 diverged)" in md
    assert "sm3 lr=0.001: no completed run (1 failed, 1 running)" in md
    assert "RuntimeError: out of memory" in md and "| running |" in md
    assert not re.search(r"\bnan\b", (s / "report.html").read_text().split("<main>")[1], re.IGNORECASE)


def test_gpu_figures_and_mixed_provenance_are_shown(tmp_path):
    s = write_suite(tmp_path / "tiny", diverged={})
    for run in s.glob("*/run.json"):
        doc = json.loads(run.read_text())
        doc["summary"] |= {"mfu": 0.41, "peak_mem_kind": "cuda_allocated", "cuda_max_reserved_bytes": 6 * 2**30}
        if "adamw" in run.parent.name:
            doc["env"] |= {"git_commit": "def5678", "git_dirty": True}
        run.write_text(json.dumps(doc))
    write_report(s)
    md = (s / "report.md").read_text()
    assert "| 41.0% |" in md and "| 6144.0 |" in md and "cuda_allocated" in md
    assert "2 different git commits" in md and "uncommitted changes" in md
    assert "MFU 41.0%" in (s / "report.html").read_text()
