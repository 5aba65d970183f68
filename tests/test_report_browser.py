"""report.html in a real headless browser, offline: every plot renders and nothing logs an error."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from analysis.report import write_report
from fixtures_results import STEPS, shipped_tuned, write_run, write_suite, write_tuning  # noqa: F401 (a fixture)

pytestmark = pytest.mark.browser
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's chromium, installed with apt when missing (never a downloaded browser)."""
    if not CHROMIUM.exists():
        if os.geteuid() != 0:
            pytest.fail(f"{CHROMIUM} is missing and installing it needs root: apt-get install -y chromium")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode:
                pytest.fail(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    if not CHROMIUM.exists():
        pytest.fail(f"apt-get installed chromium but {CHROMIUM} is still missing")
    return CHROMIUM


def test_report_renders_offline(chromium, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
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
    errors, requests = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            # Offline: anything but the file itself would be a dependency on the network.
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                       else (requests.append(route.request.url), route.abort()))
            page.goto((suite / "report.html").as_uri(), wait_until="load")
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n_figures}", timeout=30_000)
            rendered = page.eval_on_selector_all(
                ".js-plotly-plot", "els => els.filter(e => e.querySelector('.main-svg')).length")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert rendered == n_figures
    assert errors == []
    assert requests == []
    assert shot.stat().st_size > 10_000
    if os.environ.get("OPTARENA_SCREENSHOT_DIR"):
        out = Path(os.environ["OPTARENA_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / "report.png")
