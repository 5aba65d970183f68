"""The comparison report of a results folder: report.html (one self-contained file, opens
offline), report.md (the same tables) and a table on the terminal.

    python -m analysis.report results/<suite> [--baseline adamw] [--target-loss 2.1]
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from plotly.offline import get_plotlyjs

from . import plots, stats
from .compare import PAIRS_FOR_FULL_COVERAGE, Comparison, compare
from .load import SCHEMA_VERSION, ResultsError

SECTIONS = {
    "summary": "Summary", "curves": "Loss curves", "statistics": "Against the baseline",
    "cost": "Memory and throughput", "pareto": "Memory vs loss",
    "divergences": "Divergences and failures", "tuning": "Tuning", "provenance": "Provenance",
}
MIB = 2**20
DASH = "—"


def _finite(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _num(v, fmt: str = ".4f") -> str:
    return format(v, fmt) if _finite(v) else DASH


def _ci(lo, hi, fmt: str = ".4f") -> str:
    return f"[{lo:{fmt}}, {hi:{fmt}}]" if _finite(lo) and _finite(hi) else DASH


# ---------------------------------------------------------------- text and tables

def budget_line(b: dict) -> str:
    """The budget in words; the optional parts only when the engine recorded them."""
    text = (f"{b.get('tokens', 0):,} tokens = {b.get('steps')} steps × {b.get('global_batch')} sequences × "
            f"{b.get('seq_len')} tokens")
    optional = (("schedule", "{} schedule"), ("warmup_steps", "{} warm-up steps"),
                ("min_lr_ratio", "min lr ratio {}"), ("grad_clip", "grad clip {}"),
                ("eval_every", "evaluation every {} steps"))
    return "; ".join([text] + [fmt.format(b[k]) for k, fmt in optional if b.get(k) is not None])


def _speedup_text(r) -> str:
    if not _finite(r.speedup):
        return DASH
    if r.speedup_where == 1:
        return f"≥ {r.speedup:.2f}× (below the baseline's whole curve)"
    if r.speedup_where == -1:
        return f"≤ {r.speedup:.2f}× (above the baseline's first evaluation)"
    return f"{r.speedup:.2f}× {_ci(r.speedup_lo, r.speedup_hi, '.2f')}"


def _verdict_text(r) -> str:
    if r.is_baseline:
        return "baseline"
    if not isinstance(r.verdict, str):
        return DASH
    return r.verdict + ("*" if r.provisional else "")


def summary_table(c: Comparison) -> pd.DataFrame:
    rows = []
    for r in c.arms.itertuples():
        rows.append({
            "arm": r.arm, "seeds ok/run": f"{r.n_completed}/{r.n_runs}",
            "final val loss (mean ± sd)": _num(r.loss_mean) + (f" ± {r.loss_sd:.4f}" if _finite(r.loss_sd) else ""),
            "95% CI": _ci(r.loss_lo, r.loss_hi),
            "Δ vs baseline [95% CI]": f"{r.delta:+.4f} {_ci(r.delta_lo, r.delta_hi, '+.4f')}"
            if _finite(r.delta) else DASH,
            "verdict": _verdict_text(r), "MDE (80% power)": _num(r.mde),
            "token-equivalent speedup": "1 (baseline)" if r.is_baseline else _speedup_text(r),
            "time to target (s)": _num(r.time_to_target_s, ".1f") if r.n_completed else DASH,
        })
    return pd.DataFrame(rows)


def cost_table(c: Comparison) -> pd.DataFrame:
    rows = []
    for r in c.arms.itertuples():
        step = r.time_fwd_bwd_s + r.time_opt_s
        rows.append({
            "arm": r.arm, "optimizer state (MiB/rank)": _num(r.opt_state_bytes / MIB, ".2f"),
            "peak memory (MiB/rank)": _num(r.peak_mem_bytes / MIB, ".1f"), "peak kind": r.peak_mem_kind or DASH,
            "CUDA reserved (MiB)": _num(r.cuda_max_reserved_bytes / MIB, ".1f"),
            "ranks": _num(r.world_size, ".0f"), "tokens/s": _num(r.tokens_per_s, ",.0f"),
            "MFU": _num(r.mfu, ".1%"), "fwd+bwd s/step": _num(r.time_fwd_bwd_s, ".4f"),
            "optimizer s/step": _num(r.time_opt_s, ".4f"),
            "optimizer share": _num(r.time_opt_s / step if step else math.nan, ".1%"),
        })
    return pd.DataFrame(rows)


def problems_table(c: Comparison) -> pd.DataFrame:
    p = c.problems.copy()
    p["step"] = [f"{s}/{t}" for s, t in zip(p.step, p.total_steps)]
    p["diverged_at_step"] = [_num(v, ".0f") for v in p.diverged_at_step]
    p["error"] = p.error.fillna(DASH)
    return p.drop(columns="total_steps").rename(columns={"step": "steps done"})


def tuning_table(c: Comparison) -> pd.DataFrame:
    rows = []
    for r in c.tuning_summary.itertuples():
        rows.append({
            "study": r.study, "trial budget": r.n_trials, "trials run": r.trials_run,
            "completed": r.completed, "diverged": r.diverged, "best loss": _num(r.best_loss),
            "best lr": _num(r.best_lr, ".3g"),
            "stable lr band": f"{_num(r.stable_lo, '.3g')} – {_num(r.stable_hi, '.3g')}",
            "band width (decades)": _num(r.stable_decades, ".2f"),
            "device-seconds": _num(r.device_seconds, ",.0f"),
        })
    return pd.DataFrame(rows)


def provenance_warnings(runs: pd.DataFrame) -> list[str]:
    """What makes runs of one folder less comparable than they look: mixed code, packages or hardware."""
    out = []
    for field, what in (("env.git_commit", "git commits"), ("env.device_name", "devices"),
                        ("env.world_size", "world sizes")):
        if field in runs and runs[field].nunique() > 1:
            out.append(f"Warning: the runs come from {runs[field].nunique()} different {what}.")
    pkgs = pd.DataFrame(list(runs["env.packages"])).astype("string")
    mixed = [p for p in pkgs if pkgs[p].nunique(dropna=False) > 1]
    if mixed:
        out.append(f"Warning: package versions differ between runs: {', '.join(mixed)}.")
    if "env.git_dirty" in runs and runs["env.git_dirty"].fillna(False).astype(bool).any():
        out.append("Warning: some runs were made from a git tree with uncommitted changes.")
    return out


def headline(c: Comparison) -> list[str]:
    """One sentence per arm against its baseline, and the run count; the summary at the top."""
    counts = ", ".join(f"{n} {s}" for s, n in c.runs.status.value_counts().items())
    out = [f"{len(c.runs)} runs ({counts}) in {c.arms.shape[0]} arms."]
    out += provenance_warnings(c.runs)
    if not c.baseline:
        out.append("No baseline arm in this folder: differences and speedups are not computed.")
    for r in c.arms.itertuples():
        base = c.baseline.get(r.model)
        if r.is_baseline or base is None:
            continue
        if not r.n_completed:
            states = c.runs[c.runs.arm == r.arm].status.value_counts()
            out.append(f"{r.arm}: no completed run ({', '.join(f'{n} {st}' for st, n in states.items())}).")
            continue
        b = c.arms[c.arms.arm == base].iloc[0]
        mem = f"optimizer state {r.opt_state_bytes / b.opt_state_bytes:.2f}× the baseline's" \
            if _finite(r.opt_state_bytes) and b.opt_state_bytes else "optimizer state unknown"
        out.append(
            f"{r.arm}: final val loss {_num(r.loss_mean)} vs {_num(b.loss_mean)} ({base}), "
            f"Δ {_num(r.delta, '+.4f')} {_ci(r.delta_lo, r.delta_hi, '+.4f')} over {r.n_pairs:.0f} paired seeds: "
            f"{_verdict_text(r)}; token-equivalent speedup {_speedup_text(r)}; {mem}"
            + (f"; {r.n_diverged} of {r.n_runs} runs diverged" if r.n_diverged else "") + ".")
    return out


def method_notes(c: Comparison) -> list[str]:
    notes = [
        f"Final val loss per arm: mean over completed seeds; interval: {stats.LEVEL:.0%} bootstrap "
        f"(expanded percentile, {stats.N_BOOT:,} resamples, RNG seed {stats.BOOT_SEED}).",
        "Δ = arm − baseline, paired by seed (seeds where both completed); verdict 'better'/'worse' when "
        "its interval excludes 0, else 'not distinguishable'. The baseline is the best-mean arm of "
        "the baseline optimizer for each model.",
        f"* fewer than {PAIRS_FOR_FULL_COVERAGE} paired seeds: a bootstrap interval covers less than its "
        "nominal level (about 75% at 3 seeds in simulation), so treat that verdict as provisional.",
        "MDE (minimum detectable effect) = (t₀.₉₇₅,ₙ₋₁ + t₀.₈₀,ₙ₋₁) · sd(Δ) / √n (Student t; "
        "→ 2.80 · sd(Δ) / √n for many seeds, 5.36 · sd(Δ) / √n at n = 3): the smallest true "
        "difference these n paired seeds detect with 80% power at α = 0.05.",
        "Token-equivalent speedup = tokens the baseline's seed-averaged val curve needs to reach the "
        "arm's final loss (log-token interpolation) ÷ the arm's tokens; CI from paired seed resamples. "
        "It is read off the baseline's own schedule (not from baseline runs at shorter budgets), "
        "where the baseline is not yet annealed, so figures below 1 are optimistic for the arm.",
        "Time to target: wall-clock seconds (as logged, evaluation included) until the arm's "
        "seed-averaged val curve first reaches "
        + ", ".join(f"{t:.4f} ({m})" for m, t in c.target.items())
        + (" — the baseline's final loss" if c.baseline else "") + "; '—' when never reached.",
    ]
    return notes


def provenance(c: Comparison) -> list[tuple[str, pd.DataFrame]]:
    runs = c.runs
    env_fields = [f for f in ("env.git_commit", "env.git_dirty", "env.python", "env.device",
                              "env.device_name", "env.world_size", "env.hostname") if f in runs]
    env = [{"field": f.removeprefix("env."), "value(s)": ", ".join(
        f"{v} ({n} runs)" for v, n in runs[f].astype(str).value_counts().items())} for f in env_fields]
    pkgs = pd.DataFrame(list(runs["env.packages"])).astype("string")
    env += [{"field": f"package {p}", "value(s)": ", ".join(
        f"{v} ({n} runs)" for v, n in pkgs[p].fillna("absent").value_counts().items())} for p in pkgs]
    budget = pd.DataFrame([{"model": m} | b for m, b in c.budget.items()])
    data = {json.dumps(cfg.get("data"), sort_keys=True) for cfg in runs.config}
    setup = [
        {"item": "results folder", "value": str(c.folder)},
        {"item": "schema_version read", "value": f"{sorted(set(runs.schema_version))} (supported: {SCHEMA_VERSION})"},
        {"item": "data / evaluation set", "value": "; ".join(sorted(data))},
        {"item": "seeds", "value": ", ".join(map(str, sorted(runs.seed.unique())))},
        {"item": "suites", "value": ", ".join(sorted(map(str, runs.get("cfg.suite", pd.Series()).unique())))},
        {"item": "tuning budget", "value": DASH if c.tuning_summary is None else "; ".join(
            f"{r.study}: {r.n_trials} trials, {r.device_seconds:,.0f} device-s"
            for r in c.tuning_summary.itertuples())},
        {"item": "report generated", "value": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
    ]
    tuned = c.folder / "tuned.yaml"
    if tuned.is_file():
        setup.append({"item": "tuned.yaml", "value": tuned.read_text().strip()})
    run_list = runs.sort_values(["arm", "seed"])[["run_id", "arm", "seed", "status", "config_hash"]]
    arms = c.arms[["arm", "hparams"]].rename(columns={"hparams": "optimizer settings"})
    return [("Setup", pd.DataFrame(setup)), ("Budget compared at", budget),
            ("Environment", pd.DataFrame(env)), ("Arms and their optimizer settings", arms),
            ("Runs (config hash: sha256 of the resolved config, first 12 hex digits)", run_list)]


# ---------------------------------------------------------------- Markdown and terminal

def md_table(df: pd.DataFrame) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(cell, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _tables(c: Comparison) -> dict[str, list[tuple[str, pd.DataFrame]]]:
    """Section id -> its (caption, table) pairs, shared by the HTML and the Markdown."""
    out = {"summary": [("Final validation loss and comparison with the baseline", summary_table(c))],
           "cost": [("Memory and speed per rank (mean over completed seeds)", cost_table(c))],
           "divergences": [("Runs that did not complete", problems_table(c))],
           "provenance": provenance(c)}
    if c.tuning_summary is not None:
        out["tuning"] = [("Tuning studies", tuning_table(c))]
    return out


def render_md(c: Comparison) -> str:
    t = _tables(c)
    out = [f"# optarena report: {c.folder.name}", ""]
    out += [f"Compared at ({m}): {budget_line(b)}." for m, b in c.budget.items()] + [""]
    out += [f"- {h}" for h in headline(c)] + [""]
    for sid in ("summary", "cost", "divergences", "tuning", "provenance"):
        out.append(f"## {SECTIONS[sid]}\n")
        if sid == "divergences" and t[sid][0][1].empty:
            out.append("Every run completed.\n")
            continue
        if sid not in t:
            out.append("No tuning ran (no tuning/*.json in this folder).\n")
            continue
        for caption, df in t[sid]:
            out += [f"**{caption}**\n", md_table(df), ""]
        if sid == "summary":
            out += [f"- {n}" for n in method_notes(c)] + [""]
    out.append("Plots: see report.html in the same folder.")
    return "\n".join(out) + "\n"


def render_terminal(c: Comparison) -> str:
    t = summary_table(c)
    lines = [f"{c.folder}: compared at " + budget_line(b) for b in c.budget.values()]
    lines += ["", t.to_string(index=False), ""] + headline(c)
    if not c.problems.empty:
        lines += ["", "Did not complete:", problems_table(c).to_string(index=False)]
    return "\n".join(lines)


# ---------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f3b57;color:#fff;padding:18px 32px}
header h1{margin:0 0 6px;font-size:24px} header p{margin:2px 0;opacity:.9}
nav{background:#fff;border-bottom:1px solid #ddd;padding:8px 32px;position:sticky;top:0;z-index:10}
nav a{margin-right:16px;color:#1f3b57;text-decoration:none;font-size:14px}
main{padding:8px 32px 40px;max-width:1400px}
section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:12px 20px;margin:16px 0}
h2{font-size:19px;border-bottom:2px solid #1f3b57;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}
table.tbl{border-collapse:collapse;font-size:13px;margin:6px 0 12px}
.tbl th,.tbl td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;white-space:pre-wrap}
.tbl th{background:#eef2f6} .tbl tr:nth-child(even) td{background:#fafbfc}
ul.headline li{margin:4px 0} .notes{font-size:13px;color:#555}
.fig{margin:10px 0;border-top:1px solid #f0f0f0;padding-top:6px} .empty{color:#777;font-style:italic}
"""


def _html_table(caption: str, df: pd.DataFrame) -> str:
    return f"<h3>{html.escape(caption)}</h3>" + df.to_html(index=False, classes="tbl", border=0, escape=True)


def _html_figure(fig) -> str:
    return '<div class="fig">' + fig.to_html(full_html=False, include_plotlyjs=False,
                                              config={"displaylogo": False, "responsive": True}) + "</div>"


def render_html(c: Comparison) -> str:
    tables, figs = _tables(c), plots.figures(c)
    body = {sid: [] for sid in SECTIONS}
    body["summary"] += ['<ul class="headline">'] + [f"<li>{html.escape(h)}</li>" for h in headline(c)] + ["</ul>"]
    for sid, items in tables.items():
        body[sid] += [_html_table(cap, df) for cap, df in items]
    body["summary"] += ['<ul class="notes">'] + [f"<li>{html.escape(n)}</li>" for n in method_notes(c)] + ["</ul>"]
    for sid, fs in figs.items():
        body[sid] += [_html_figure(f) for f in fs]
    if c.problems.empty:
        body["divergences"] = ['<p class="empty">Every run completed.</p>']
    if c.tuning is None:
        body["tuning"] = ['<p class="empty">No tuning ran (no tuning/*.json in this folder).</p>']

    budgets = "".join(f"<p><b>Compared at</b> ({html.escape(m)}): {html.escape(budget_line(b))}</p>"
                      for m, b in c.budget.items())
    nav = "".join(f'<a href="#{sid}">{title}</a>' for sid, title in SECTIONS.items())
    sections = "".join(f'<section id="{sid}"><h2>{title}</h2>{"".join(body[sid])}</section>'
                       for sid, title in SECTIONS.items())
    title = f"optarena report: {html.escape(c.folder.name)}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f'<style>{CSS}</style><script type="text/javascript">{get_plotlyjs()}</script></head>'
            f"<body><header><h1>{title}</h1>{budgets}</header><nav>{nav}</nav>"
            f"<main>{sections}</main></body></html>")


def write_report(folder: str | Path, baseline: str = "adamw", target_loss: float | None = None) -> Comparison:
    """Write report.html and report.md into `folder`; return the Comparison they show."""
    c = compare(folder, baseline=baseline, target_loss=target_loss)
    (c.folder / "report.html").write_text(render_html(c), encoding="utf-8")
    (c.folder / "report.md").write_text(render_md(c), encoding="utf-8")
    return c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", help="results/<suite>")
    ap.add_argument("--baseline", default="adamw", help="optimizer every arm is compared with")
    ap.add_argument("--target-loss", type=float, default=None,
                    help="loss for time-to-target (default: the baseline's final loss)")
    args = ap.parse_args(argv)
    try:
        c = write_report(args.folder, args.baseline, args.target_loss)
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(render_terminal(c))
    print(f"\nwrote {c.folder / 'report.html'} and {c.folder / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
