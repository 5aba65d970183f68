"""A page in a real headless browser, offline: Debian's Chromium through playwright, every request
but the file itself refused and counted, console errors collected (the HTML tests share it)."""

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

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


@dataclass
class Rendered:
    plots: int  # plotly figures that drew their SVG
    errors: list[str]  # console errors and uncaught page errors
    requests: list[str]  # every URL but the file itself (refused)
    screenshot: Path


def render(chromium: Path, page_file: Path, n_figures: int, screenshot: Path) -> Rendered:
    """Open page_file, wait until n_figures plotly figures have drawn, and take a full-page screenshot."""
    sync_api = pytest.importorskip("playwright.sync_api")
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
            page.goto(page_file.as_uri(), wait_until="load")
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n_figures}", timeout=30_000)
            rendered = page.eval_on_selector_all(
                ".js-plotly-plot", "els => els.filter(e => e.querySelector('.main-svg')).length")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return Rendered(rendered, errors, requests, screenshot)


def assert_rendered(shown: Rendered, n_figures: int) -> None:
    """Every figure drew, nothing logged an error or asked the network, the screenshot has content;
    the screenshot is kept in $OPTARENA_SCREENSHOT_DIR when that is set."""
    assert shown.plots == n_figures
    assert shown.errors == []
    assert shown.requests == []
    assert shown.screenshot.stat().st_size > 10_000
    if os.environ.get("OPTARENA_SCREENSHOT_DIR"):
        out = Path(os.environ["OPTARENA_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shown.screenshot, out / shown.screenshot.name)
