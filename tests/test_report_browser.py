"""report.html in a real headless browser, offline: every plot renders and nothing logs an error."""

import re

import numpy as np
import pytest

from analysis.report import write_report
from tests.browser import assert_rendered, chromium, render  # noqa: F401 (a fixture)
from fixtures_results import STEPS, shipped_tuned, write_run, write_suite, write_tuning  # noqa: F401 (a fixture)

pytestmark = pytest.mark.browser


def test_report_renders_offline(chromium, tmp_path):
    pytest.importorskip("playwright.sync_api")
    suite = write_suite(tmp_path / "tiny")
    for opt in ("adamw", "adam_mini", "sm3", "lamb"):  # 12 arms: past the ten colours of the first palette
        for lr in (3e-4, 3e-3) if opt != "lamb" else (3e-4, 1e-3, 3e-3):
            write_run(suite, opt, 0, lr=lr)
    write_suite(suite, offsets={"adamw": 0.0, "adam_mini": -0.05}, diverged={}, steps=2 * STEPS)  # a 2nd budget
    write_tuning(suite, "adamw", list(np.logspace(-4, -2, 8)), best_lr=1e-3, diverge_above=5e-3)
    write_tuning(suite, "adam_mini", list(np.logspace(-4, -2, 8)), best_lr=6e-4, diverge_above=2e-3)
    write_report(suite, baseline="adamw lr=0.001")
    page_html = (suite / "report.html").read_text()
    n_figures = len(re.findall(r'class="plotly-graph-div"', page_html))
    assert n_figures == 15  # per budget: 2 loss curves, difference, memory, throughput, Pareto; loss
    #                        against budget; 2 tuning
    shown = render(chromium, suite / "report.html", n_figures, tmp_path / "report.png")
    assert_rendered(shown, n_figures)
