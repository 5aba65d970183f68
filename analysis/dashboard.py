"""results/index.html: every suite folder under results/ on one self-contained page that opens
offline: its headline verdicts and budgets (the report's own), the scaling plots of a ladder, and a
link to its report.html (built where it is missing). A folder that is not a suite, or that the
analysis refuses, gets a line saying why.

    python -m analysis.dashboard [results_dir]
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

from plotly.offline import get_plotlyjs

from . import plots, report, scaling
from .compare import compare
from .load import ResultsError


def _items(lines: list[str]) -> str:
    return "<ul class=\"headline\">" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>"


def _suite(folder: Path) -> tuple[str, str]:
    """(a one-line status for the index, the suite's HTML section body)."""
    if not (folder / "suite.json").is_file() and not any(folder.glob("*/run.json")):
        return "not a suite", '<p class="empty">Not a suite: no suite.json and no run folders (*/run.json).</p>'
    page = folder / "report.html"
    try:
        # A missing report is built; its comparisons are the ones shown here.
        cs = compare(folder) if page.is_file() else report.write_report(folder)
    except ResultsError as e:
        why = html.escape(str(e))
        return "refused", f'<p class="empty">No report: the analysis refuses this folder: {why}</p>'
    link = f'<p><a href="{html.escape(folder.name)}/report.html">{html.escape(folder.name)}/report.html</a></p>'
    parts = [link] + [f"<p><b>Compared at</b> ({html.escape(m)}): {html.escape(report.budget_line(b))}</p>"
                      for c in cs for m, b in c.budget.items()]
    s = report.ladder(cs)
    if s is not None:
        parts += ["<h3>Across the ladder</h3>", _items(scaling.verdicts(s))]
        parts += [report.html_figure(f) for f in plots.scaling_figures(cs, s)]
    for i, c in enumerate(cs):  # the largest budget open, the others folded
        parts.append(f"<details{' open' if i == len(cs) - 1 else ''}><summary>At {c.tokens:,} tokens</summary>"
                     f"{_items(report.headline(c))}</details>")
    budgets = ", ".join(f"{c.tokens:,}" for c in cs)
    return f"{len(cs)} budget{'s' if len(cs) > 1 else ''} ({budgets} tokens)" + (
        f", a ladder of {len(s.models)} models" if s is not None else ""), "".join(parts)


def render(results: Path) -> str:
    folders = sorted(p for p in results.iterdir() if p.is_dir() and not p.name.startswith("."))
    entries = [(f, *_suite(f)) for f in folders]
    nav = "".join(f'<a href="#s-{i}">{html.escape(f.name)}</a>' for i, (f, _, _) in enumerate(entries))
    listing = "".join(f"<li><a href=\"#s-{i}\">{html.escape(f.name)}</a>: {html.escape(status)}</li>"
                      for i, (f, status, _) in enumerate(entries)) or "<li>No folders.</li>"
    sections = "".join(f'<section id="s-{i}"><h2>{html.escape(f.name)}</h2>{body}</section>'
                       for i, (f, _, body) in enumerate(entries))
    title = f"optarena dashboard: {html.escape(str(results))}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f'<style>{report.CSS}</style><script type="text/javascript">{get_plotlyjs()}</script></head>'
            f"<body><header><h1>{title}</h1><p>{len(entries)} folders</p></header><nav>{nav}</nav>"
            f'<main><section id="index"><h2>Suites</h2><ul>{listing}</ul></section>{sections}</main></body></html>')


def write_dashboard(results: str | Path) -> Path:
    results = Path(results)
    if not results.is_dir():
        raise ResultsError(f"{results}: no such results folder")
    out = results / "index.html"
    out.write_text(render(results), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.dashboard", description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="?", default="results", help="the results folder (default: results)")
    args = ap.parse_args(argv)
    try:
        out = write_dashboard(args.results)
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
