"""results/index.html (analysis.dashboard) in a real headless browser, offline, over a small real
ladder (two model sizes, cooldown branches, two optimizers, two seeds) beside a folder that is not
a suite and one the analysis refuses: every plot renders, nothing logs an error or asks the network."""

import json
import re

import pytest

from analysis.dashboard import write_dashboard
from tests.browser import assert_rendered, chromium, render  # noqa: F401 (a fixture)
from runners.suite import run_suite
from tests.conftest import SMALL_RUN, TINY

pytestmark = pytest.mark.browser

# Two sizes as model overrides of the committed presets (models=[...] gives every model the same
# overrides): a 1-layer nano (22k parameters) and a 2-layer model under another preset's name (434k).
SIZES = (["model=nano", "model.n_layer=1", "model.n_embd=32", "model.n_head=2"],
         ["model=gpt2_small", "model.vocab_size=256", "model.n_layer=2", "model.n_head=4", "model.n_embd=128"])
LADDER = [*TINY, *(o for o in SMALL_RUN if not o.startswith(("model.n_layer", "model.n_embd"))),
          "only=[adamw,adam_mini]", "budget.schedule=wsd", "budget.warmup=3", "branches=[0.5]", "seeds=[0,1]",
          "report=false", "workers=2"]


def test_dashboard_renders_offline(chromium, tmp_path, shakespeare_bytes):
    pytest.importorskip("playwright.sync_api")
    results = tmp_path / "results"
    for size in SIZES:
        run_suite([*LADDER, *size, f"results_dir={results}"])
    suite = results / "tiny"
    declared = json.loads((suite / "suite.json").read_text())
    target = {"target": {"model": "gpt2_medium", "tokens": 7e9, "device": "h100", "world_size": 1}}
    (suite / "suite.json").write_text(json.dumps(declared | target))
    (results / "notes").mkdir()  # not a suite
    (results / "old" / "run-1").mkdir(parents=True)  # a run the analysis cannot read
    (results / "old" / "run-1" / "run.json").write_text(json.dumps({"schema_version": 0}))

    write_dashboard(results)
    page_html = (results / "index.html").read_text()
    assert (suite / "report.html").is_file()  # the missing report was built
    assert 'href="tiny/report.html"' in page_html and "a ladder of 2 models" in page_html
    assert "Not a suite" in page_html and "the analysis refuses this folder" in page_html
    assert "schema_version 0" in page_html
    assert "Across the ladder" in page_html and "at 355M parameters and 7B tokens" in page_html
    n_figures = len(re.findall(r'class="plotly-graph-div"', page_html))
    assert n_figures == 2  # the ladder's: speedup against N per budget, loss against tokens per rung
    shown = render(chromium, results / "index.html", n_figures, tmp_path / "dashboard.png")
    assert_rendered(shown, n_figures)
