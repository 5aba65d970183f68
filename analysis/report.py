"""The comparison report of a results folder: report.html (one self-contained file, opens
offline), report.md (the same tables) and a table on the terminal; one part per budget.

    python -m analysis.report results/<suite> [--baseline ARM] [--target-loss 2.1]
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

from . import plots, scaling, schedule_check, speedup, stats
from .compare import LR_SOURCES, NOISE_SDS, Comparison, branch_costs, compare, read_lr_law
from .load import SCHEMA_VERSION, ResultsError, load_declared

SECTIONS = {
    "summary": "Summary", "curves": "Loss curves", "statistics": "Against the baseline",
    "budgets": "Loss against budget", "cost": "Memory and throughput", "pareto": "Memory vs loss",
    "divergences": "Divergences and failures", "tuning": "Tuning", "provenance": "Provenance",
}
LADDER = {"scaling": "Across the ladder"}  # after "budgets", in a folder of 2 or more models only
FOLDER_SECTIONS = ("budgets", "scaling", "tuning", "provenance")  # once per folder; the others once per budget
MD_SECTIONS = ("summary", "budgets", "scaling", "cost", "divergences", "tuning", "provenance")  # the others are plots
MIB = 2**20
DASH = "—"
NOISE = "machine noise: not comparable"


def _finite(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _num(v, fmt: str = ".4f") -> str:
    """A figure; an unbounded one (an interval end past a failed seed) as ∞."""
    if not _finite(v):
        return DASH
    if math.isinf(v):
        return ("+∞" if "+" in fmt else "∞") if v > 0 else "−∞"
    return format(v, fmt)


def _ci(lo, hi, fmt: str = ".4f") -> str:
    return f"[{_num(lo, fmt)}, {_num(hi, fmt)}]" if _finite(lo) and _finite(hi) else DASH


def _spread(r, name: str, fmt: str, per: float = 1.0) -> str:
    """Median [5%, 95%] over the arm's logged steps, all seeds pooled (divided by `per`)."""
    med, lo, hi = (getattr(r, name + end) / per for end in ("", "_lo", "_hi"))
    return f"{_num(med, fmt)} {_ci(lo, hi, fmt)}" if _finite(med) else DASH


def _budget_title(c: Comparison) -> str:
    return f"At {c.tokens:,} tokens"


# ---------------------------------------------------------------- text and tables

def budget_line(b: dict) -> str:
    """The budget in words; the optional parts only when the engine recorded them."""
    text = (f"{b.get('tokens', 0):,} tokens = {b.get('steps')} steps × {b.get('global_batch')} sequences × "
            f"{b.get('seq_len')} tokens")
    optional = (("schedule", "{} schedule"), ("warmup_steps", "{} warm-up steps"),
                ("min_lr_ratio", "min lr ratio {}"), ("grad_clip", "grad clip {}"),
                ("eval_every", "evaluation every {} steps"))
    return "; ".join([text] + [fmt.format(b[k]) for k, fmt in optional if b.get(k) is not None])


def _speedup_text(r, c: Comparison) -> str:
    """The speedup with its interval and label, and how far beyond the baseline's budgets it lies."""
    if r.is_baseline:
        return "1 (baseline)"
    if not _finite(r.speedup):
        return DASH
    ci = _ci(r.speedup_lo, r.speedup_hi, ".2f")
    if r.speedup_label == "measured":
        return f"{r.speedup:.2f}× {ci} measured"
    law = c.laws[r.model]
    end, side = (law.tokens[-1], "largest") if r.speedup_where > 0 else (law.tokens[0], "smallest")
    if r.speedup_label == "extrapolated":
        return f"{r.speedup:.2f}× {ci} extrapolated: the fit at {r.speedup_beyond:.2f}× the baseline's {side} budget"
    sign = "≥" if r.speedup_where > 0 else "≤"
    if not _finite(r.speedup_gap) or math.isinf(r.speedup_gap):
        why = "its mean loss is unbounded (diverged/failed seeds)"
    else:
        why = (f"its loss is {abs(r.speedup_gap):.4f} {'below' if r.speedup_gap < 0 else 'above'} the baseline's "
               f"at its {side} budget ({end:,.0f} tokens)")
    return f"{sign} {r.speedup:.2f}× {ci} bound: {why}"


def _verdict_text(r) -> str:
    if r.is_baseline:
        return "baseline"
    return r.verdict if isinstance(r.verdict, str) else DASH


def _failures(r) -> str:
    """'k of n diverged/failed', or '' when every seed's run finished."""
    k = r.n_diverged + r.n_failed
    if not k:
        return ""
    what = "diverged" if not r.n_failed else "failed" if not r.n_diverged else "diverged/failed"
    return f"{k} of {r.n_runs} {what}"


def _mde_text(r) -> str:
    return "not reachable" if _finite(r.mde) and math.isinf(r.mde) else _num(r.mde)


def summary_table(c: Comparison) -> pd.DataFrame:
    rows = []
    for r in c.arms.itertuples():
        rows.append({
            "arm": r.arm, "lr source": r.lr_source, "seeds ok/run": f"{r.n_completed}/{r.n_runs}",
            "diverged/failed": _failures(r) or DASH,
            f"final {c.split} loss (mean ± sd)":
                _num(r.loss_mean) + (f" ± {r.loss_sd:.4f}" if _finite(r.loss_sd) else ""),
            "95% CI (t)": _ci(r.loss_lo, r.loss_hi),
            "Δ vs baseline [95% CI]": f"{_num(r.delta, '+.4f')} {_ci(r.delta_lo, r.delta_hi, '+.4f')}"
            if _finite(r.delta) else DASH,
            "n": _num(r.n_pairs, ".0f"), "p": _num(r.p_value, ".4f"),
            "verdict": _verdict_text(r), "MDE (80% power)": _mde_text(r),
            "token-equivalent speedup": _speedup_text(r, c),
            "time to target (training s)": _num(r.time_to_target_s, ".1f") if r.n_completed else DASH,
        })
    return pd.DataFrame(rows)


def cost_table(c: Comparison) -> pd.DataFrame:
    rows = []
    for r in c.arms.itertuples():
        ranks = r.world_size if _finite(r.world_size) else 1
        rows.append({
            "arm": r.arm, "lr source": r.lr_source,
            "optimizer state (MiB/rank)": _num(r.opt_state_bytes / MIB, ".2f"),
            "peak memory (MiB/rank)": _num(r.peak_mem_bytes / MIB, ".1f"), "peak kind": r.peak_mem_kind or DASH,
            "CUDA reserved (MiB)": _num(r.cuda_max_reserved_bytes / MIB, ".1f"),
            "micro-batch": r.micro_batch or DASH, "ranks": _num(r.world_size, ".0f"),
            "tokens/s, global": _spread(r, "tokens_per_s", ",.0f"),
            "tokens/s per rank": _spread(r, "tokens_per_s", ",.0f", per=ranks),
            "MFU per device": _num(r.mfu, ".1%"), "s/step": _spread(r, "step_s", ".4f"),
            "fwd+bwd s/step": _spread(r, "fwd_bwd_s", ".4f"), "optimizer s/step": _spread(r, "opt_s", ".4f"),
            "optimizer share": _num(r.opt_s / r.step_s if r.step_s else math.nan, ".1%"),
            "comparable": NOISE if r.machine_noise else "yes" if _finite(r.fwd_bwd_s) else DASH,
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


def rung_table(cs: list[Comparison]) -> pd.DataFrame:
    """Each arm at the budget its lr was chosen for (a branch keeps its main run's): the lr, where it
    came from, what tuning it cost, and the final loss it reached there."""
    rows = []
    for c in cs:
        for r in c.arms.itertuples():
            if "at its main run's" in r.lr_source or not r.lr_source.startswith(("tuned", "lr law")):
                continue
            sd = f" ± {r.loss_sd:.4f}" if _finite(r.loss_sd) else ""
            rows.append({"model": r.model, "budget (tokens)": f"{c.tokens:,}", "arm": r.arm, "lr source": r.lr_source,
                         "trials": _num(r.tuning_trials, ".0f"), "tuning tokens": _num(r.tuning_tokens, ",.0f"),
                         "tuning device-s": _num(r.tuning_device_s, ",.0f"), f"final {c.split} loss": _num(r.loss_mean) + sd})
    return pd.DataFrame(rows)


def lr_law_tables(folder: Path) -> list[tuple[str, pd.DataFrame]]:
    """Per optimizer, the lr law of the suite (lr_law.json): the tuned rungs it was fitted on with
    their residuals, and the rungs that took its lr."""
    doc, out = read_lr_law(folder), []
    for name, law in doc.get("laws", {}).items():
        exps = ", ".join(f"{k} exponent {v:+.3f}" for k, v in law["exponents"].items())
        rows = [{"model": p["model"], "params": f"{p['params']:,}", "tokens": f"{p['tokens']:,}", "lr": "tuned",
                 "tuned lr": _num(p["lr"], ".3g"), "law's lr": _num(p["fitted"], ".3g"),
                 "residual (ln)": _num(p["residual"], "+.3f")} for p in law["points"]]
        rows += [{"model": g["model"], "params": f"{g['params']:,}", "tokens": f"{g['tokens']:,}", "lr": "from the law",
                  "tuned lr": DASH, "law's lr": _num(g["lr"], ".3g"), "residual (ln)": DASH}
                 for g in doc.get("given", []) if g["optimizer"] == name]
        out.append((f"lr law of {name}: lr = {law['form']}, A = {law['A']:.3g}, {exps}, fitted in log space over "
                    f"{law['rungs']} tuned rungs (rms residual {law['rms_residual']:.3f} in ln lr"
                    + ("; two rungs: an exact fit" if law["rungs"] == 2 else "") + ")", pd.DataFrame(rows)))
    return out


def law_table(c: Comparison, model: str) -> pd.DataFrame:
    """The baseline's end-of-schedule points against its law: per budget, the seed mean, the law
    and (for a fit) the residual, also in standard errors of the mean."""
    law = c.laws[model]
    rows = []
    for t, mean, sd, n, res in zip(law.tokens, law.mean, law.sd, law.n,
                                   law.residuals if law.residuals is not None else [math.nan] * len(law.tokens)):
        se = sd / math.sqrt(n) if n > 1 else math.nan
        rows.append({"budget (tokens)": f"{t:,.0f}", "seeds": int(n),
                     f"final {c.split} loss (mean ± sd)": _num(mean) + (f" ± {sd:.4f}" if _finite(sd) else ""),
                     "law": _num(float(law.loss(t))), "residual": _num(res, "+.4f"),
                     "residual / s.e.": _num(res / se if _finite(se) and se > 0 else math.nan, "+.2f")})
    return pd.DataFrame(rows)


def _law_caption(c: Comparison, model: str) -> str:
    law = c.laws[model]
    family = c.arms.family[c.arms.arm == c.baseline[model]].iloc[0]
    what = _law_text(law) if law.kind != "none" else "no law"
    return f"The baseline's law ({family}): {what}" + (f"; {law.problem}" if law.problem else "") + \
        (f"; {law.left_out}" if law.left_out else "")


def speedups_table(cs: list[Comparison]) -> pd.DataFrame:
    """Family (rows) by budget (columns): the speedup at each budget, baseline families included."""
    cells = {}
    for c in cs:
        for r in c.arms.itertuples():
            cells.setdefault(r.family, {})[f"at {c.tokens:,} tokens"] = _speedup_text(r, c)
    return pd.DataFrame.from_dict(cells, orient="index").fillna(DASH).rename_axis("arm").reset_index()


def _cost_cells(stable: float, branches: int, cooldown: float, dedicated: float) -> dict:
    total = stable + cooldown
    return {"stable tokens": f"{stable:,.0f}", "branches": int(branches), "cooldown tokens": f"{cooldown:,.0f}",
            "total tokens": f"{total:,.0f}", "dedicated runs": f"{dedicated:,.0f}",
            "share": _num(total / dedicated if dedicated else math.nan, ".0%")}


def branch_table(cs: list[Comparison]) -> pd.DataFrame:
    """The cost of the cooldown branches: each stable phase once, plus each cooldown, against the
    dedicated runs the branches stand in for; a total row."""
    b = branch_costs(cs)
    figures = ["stable_tokens", "branches", "cooldown_tokens", "dedicated_tokens"]
    rows = [{"stable-phase run": r.parent, "arm": r.arm, "seed": _num(r.seed, ".0f"), "status": r.status,
             "at budgets": ", ".join(f"{t:,}" for t in r.budgets) or DASH}
            | _cost_cells(*(getattr(r, f) for f in figures)) for r in b.itertuples()]
    if len(b) > 1:
        rows.append({"stable-phase run": "total"} | _cost_cells(*b[figures].sum()))
    return pd.DataFrame(rows).fillna("")


def cosine_table(cs: list[Comparison]) -> pd.DataFrame:
    """Each arm's branches against cosine runs of their budgets, seeds and lr (cosine_check)."""
    g = schedule_check.gaps(pd.concat([c.runs for c in cs]), cs[0].checks, cs[0].loss)
    return pd.DataFrame([{"arm": r.arm, "budget (tokens)": f"{r.tokens:,}", "seeds": r.seeds,
                          "branch": _num(r.branch), "cosine": _num(r.cosine),
                          "branch − cosine [95% CI]": f"{_num(r.gap, '+.4f')} {_ci(r.gap_lo, r.gap_hi, '+.4f')}",
                          "seed sd": _num(r.seed_sd), "": r.verdict} for r in g.itertuples()])


def folder_notes(cs: list[Comparison]) -> list[str]:
    """What the whole folder holds beyond its comparisons."""
    stable = cs[0].stable
    if stable.empty:
        return []
    return [f"{len(stable)} stable-phase runs (constant schedule after warm-up) end at no budget: no verdict "
            f"or speedup uses them; they are listed, with their branches' cost, under {SECTIONS['cost']}."]


def budgets_note(cs: list[Comparison]) -> str | None:
    """Why the loss-against-budget section is empty, or None."""
    if len(cs) > 1:
        return None
    return (f"One budget ({cs[0].tokens:,} tokens): no loss against budget, and no token-equivalent speedup, "
            "which needs end-of-schedule runs at several budgets (cooldown branches or dedicated runs).")


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
    sources = sorted({s.split(" (")[0] for s in c.arms.lr_source})
    if len(sources) > 1:  # e.g. a tuned baseline against arms at their default lr
        out.append(f"Warning: the arms' lrs come from different sources ({', '.join(sources)}): an arm "
                   "tuned at this budget has an advantage over one that was not.")
    for model, base in c.baseline.items():
        b = c.arms[c.arms.arm == base].iloc[0]
        out.append(f"Baseline{f' ({model})' if len(c.baseline) > 1 else ''}: {base} (lr source: {b.lr_source}).")
        if c.laws[model].problem:
            out.append(f"No token-equivalent speedup: {c.laws[model].problem}.")
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
        failed = _failures(r)
        out.append(
            f"{r.arm} ({r.lr_source}): final {c.split} loss {_num(r.loss_mean)} vs {_num(b.loss_mean)}, "
            f"Δ {_num(r.delta, '+.4f')} {_ci(r.delta_lo, r.delta_hi, '+.4f')} over {r.n_pairs:.0f} paired seeds: "
            f"{_verdict_text(r)}; token-equivalent speedup {_speedup_text(r, c)}; {mem}"
            + (f"; {failed}" if failed else "") + ".")
    return out


def how_to_read(c: Comparison) -> str:
    """The test, n and MDE behind each verdict, in one paragraph."""
    behind = [f"{r.arm}: n={r.n_pairs:.0f}, p={_num(r.p_value)}, MDE {_mde_text(r)} → {r.verdict}"
              + (f" ({_failures(r)})" if _failures(r) else "")
              for r in c.arms.itertuples() if isinstance(r.verdict, str)]
    return (
        f"How to read this: each verdict is the two-sided {stats.TEST} at {stats.ALPHA:.0%} on the per-seed "
        f"differences of the final {c.split} loss, arm − baseline, paired by seed (same initial weights "
        "and data order). n counts the seeds with an outcome for both; a seed on which an arm diverged or "
        "failed counts as that arm's loss on that seed (the largest rank against it), and an arm with such a "
        f"seed is never called better. Below {stats.MIN_PAIRS} pairs the test cannot reach 5% (its smallest "
        "p is 2/2ⁿ), so there is no verdict. The MDE is the smallest true difference this test detects with "
        f"{stats.POWER:.0%} power at that n, for normal noise with the observed sd of the differences: "
        "'not distinguishable' does not mean equal, only that any difference is likely below it. "
        "Δ is the Hodges–Lehmann shift (the median of the Walsh averages) and its interval the shifts the "
        "test does not reject." + (" Behind each verdict: " + "; ".join(behind) + "." if behind else "")
    )


def _law_text(law: speedup.Law) -> str:
    if law.fit is not None:
        a, b, cc = law.fit
        return (f"the fit L(D) = {a:.4g}·D^-{b:.3g} + {cc:.4g} (least squares on the seed means of "
                f"{len(law.tokens)} budgets" + (f"; kept as asked, though {law.misfit}" if law.misfit else "") + ")")
    curve = "monotone cubic (PCHIP)" if len(law.tokens) > 2 else "line"  # PCHIP of two points is their chord
    why = (f"the fit a·D^-b + c was set aside: {law.misfit}" if law.misfit
           else f"a fit a·D^-b + c needs {speedup.MIN_FIT}")
    return f"the {curve} through the seed means of its {len(law.tokens)} budgets, in log tokens ({why})"


def speedup_notes(c: Comparison) -> list[str]:
    """How this budget's speedups were read off, one line per model with a baseline."""
    out = []
    for model, law in c.laws.items():
        base = c.arms.family[c.arms.arm == c.baseline[model]].iloc[0]
        if law.problem:
            out.append(f"Token-equivalent speedup: none; {law.problem}.")
            continue
        out.append(
            f"Token-equivalent speedup at {c.tokens:,} tokens (B) = D*/B, D* being the tokens the baseline "
            f"{base} needs to reach the arm's seed-mean final {c.split} loss at B, read off its final losses at "
            f"the end of their schedules at {', '.join(f'{t:,.0f}' for t in law.tokens)} tokens: {_law_text(law)}. "
            "Only end-of-schedule losses enter: a loss read mid-schedule is not what a run of that budget reaches. "
            f"Interval: {speedup.LEVEL:.0%} percentile of {speedup.DRAWS} bootstrap draws over seeds (a seed's runs "
            "drawn together, as seeds are paired; each draw's seed means moved from the sample's by "
            "sqrt(n/(n−1))·t/z times their resampled deviation, n the fewest seeds of a series, so that the "
            "interval has Student's width at few seeds; the law refitted in each draw). measured: inside the "
            "baseline's budgets; extrapolated: the fit beyond them; bound: beyond them without a fit (≥ D_max/B, "
            "≤ D_min/B), with how far the arm's loss lies beyond."
            + (f" Note: {law.left_out}." if law.left_out else ""))
    return out


def method_notes(c: Comparison) -> list[str]:
    fb = "; ".join(f"{m}: {r.seconds:.4f} s, noise {r.noise:.4f} s over {r.runs:.0f} runs"
                   for m, r in c.fwd_bwd.iterrows()) or DASH
    return [
        f"Final {c.split} loss per arm: mean over completed seeds; interval: Student t {stats.LEVEL:.0%}."
        + (" The test split is held out: tuning never saw it." if c.split == "test" else
           " (These runs record no held-out test loss.)"),
        "lr source: " + "; ".join(f"{k}: {v}" for k, v in LR_SOURCES.items()) + ".",
        *speedup_notes(c),
        "Time to target: training seconds (wall_time_s as runners/train.py logs it: the sum over training "
        "steps of batch fetch, forward, backward, gradient clipping and optimizer step, a torch.compile in "
        "the first steps included; evaluations, checkpoints, logging and start-up excluded) until the arm's "
        "seed-averaged val curve first reaches "
        + ", ".join(f"{t:.4f} ({m})" for m, t in c.target.items())
        + (" — the baseline's final val loss" if c.baseline else "") + "; '—' when never reached.",
        "Throughput and step times: median [5th, 95th percentile] over the logged training steps of all "
        "completed seeds (warm-up steps left out). tokens/s is global (all ranks); per rank = global ÷ "
        "ranks; MFU is per device (one rank's tokens against one device's peak FLOP/s). Forward+backward "
        f"does not depend on the optimizer; its common value: {fb}. An arm whose forward+backward is more "
        f"than {NOISE_SDS:g} noise sds off it ran on a busier or idler machine: '{NOISE}'.",
    ]


def provenance(cs: list[Comparison]) -> list[tuple[str, pd.DataFrame]]:
    runs = pd.concat([c.runs for c in cs] + [cs[0].stable])
    folder, tuning_summary = cs[0].folder, cs[0].tuning_summary
    env_fields = [f for f in ("env.git_commit", "env.git_dirty", "env.python", "env.device",
                              "env.device_name", "env.world_size", "env.hostname") if f in runs]
    env = [{"field": f.removeprefix("env."), "value(s)": ", ".join(
        f"{v} ({n} runs)" for v, n in runs[f].astype(str).value_counts().items())} for f in env_fields]
    pkgs = pd.DataFrame(list(runs["env.packages"])).astype("string")
    env += [{"field": f"package {p}", "value(s)": ", ".join(
        f"{v} ({n} runs)" for v, n in pkgs[p].fillna("absent").value_counts().items())} for p in pkgs]
    budget = pd.DataFrame([{"model": m} | b for c in cs for m, b in c.budget.items()])
    data = {json.dumps({k: v for k, v in (cfg.get("data") or {}).items() if k != "seed"}, sort_keys=True)
            for cfg in runs.config}
    setup = [
        {"item": "results folder", "value": str(folder)},
        {"item": "schema_version read", "value": f"{sorted(set(runs.schema_version))} (supported: {SCHEMA_VERSION})"},
        {"item": "data / evaluation set (data.seed: the data order)", "value": "; ".join(sorted(data))},
        {"item": "seeds", "value": ", ".join(map(str, sorted(runs.seed.unique())))},
        {"item": "suites", "value": ", ".join(sorted(map(str, runs.get("cfg.suite", pd.Series()).unique())))},
        {"item": "tuning budget", "value": DASH if tuning_summary is None else "; ".join(
            f"{r.study}: {r.n_trials} trials, {r.device_seconds:,.0f} device-s"
            for r in tuning_summary.itertuples())},
        {"item": "report generated", "value": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
    ]
    tuned = folder / "tuned.yaml"
    if tuned.is_file():
        setup.append({"item": "tuned.yaml", "value": tuned.read_text().strip()})
    run_list = runs.sort_values(["arm", "seed"])[["run_id", "arm", "seed", "status", "config_hash"]]
    arms = pd.concat([c.arms.assign(budget=f"{c.tokens:,}") for c in cs])
    arms = arms[["budget", "arm", "lr_source", "hparams"]].rename(
        columns={"budget": "budget (tokens)", "lr_source": "lr source", "hparams": "optimizer settings"})
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
    """Per-budget section id -> its (caption, table) pairs, shared by the HTML and the Markdown."""
    return {"summary": [(f"Final {c.split} loss and comparison with the baseline", summary_table(c))],
            "cost": [("Memory and speed (memory per rank; times: median [5%, 95%] over steps and seeds)",
                      cost_table(c))],
            "divergences": [("Runs that did not complete", problems_table(c))]}


def _folder_tables(cs: list[Comparison]) -> dict[str, list[tuple[str, pd.DataFrame]]]:
    out = {"provenance": provenance(cs)}
    if cs[0].tuning_summary is not None:
        out["tuning"] = [("Tuning studies", tuning_table(cs[0]))]
    if not (rungs := rung_table(cs)).empty:
        out.setdefault("tuning", []).append(("The lr of each rung (a model at the budget its lr was chosen for; its "
                                             "branches keep it), what tuning it cost, and its result", rungs))
    out.setdefault("tuning", []).extend(lr_law_tables(cs[0].folder))
    if not budgets_note(cs):
        laws = {(m, c.arms.family[c.arms.arm == a].iloc[0]): (c, m) for c in cs for m, a in c.baseline.items()}
        out["budgets"] = [(_law_caption(c, m), law_table(c, m)) for c, m in laws.values()]
        out["budgets"].append(("Token-equivalent speedup at each budget", speedups_table(cs)))
    if not cs[0].checks.empty:
        out.setdefault("budgets", []).append(
            (f"Cooldown branches against cosine runs of the same budget, seed and lr (final {cs[0].split} loss, "
             "paired over seeds; within the seed noise: |mean gap| at most the cosine runs' seed sd)",
             cosine_table(cs)))
    if not branch_costs(cs).empty:
        out["cost"] = [("Cost of the cooldown branches (tokens; each stable phase counted once per arm and seed, "
                        "a branch from its from_step), against dedicated runs at the same budgets", branch_table(cs))]
    return out


def ladder(cs: list[Comparison]) -> scaling.Scaling | None:
    """The analysis across the folder's model sizes (None below 2), at the suite's declared target."""
    return scaling.ladder(cs, load_declared(cs[0].folder))


def _sections(s: scaling.Scaling | None) -> dict[str, str]:
    """The report's sections: the scaling one only for a folder of 2 or more models."""
    out = {}
    for sid, title in SECTIONS.items():
        out |= {sid: title} | (LADDER if sid == "budgets" and s is not None else {})
    return out


def _empty_note(sid: str, cs: list[Comparison]) -> str | None:
    """Why a folder section has nothing to show, or None."""
    if sid == "tuning" and cs[0].tuning is None:
        return "No tuning ran (no tuning/*.json in this folder)."
    return budgets_note(cs) if sid == "budgets" else None


def render_md(cs: list[Comparison]) -> str:
    many = len(cs) > 1
    out = [f"# optarena report: {cs[0].folder.name}", ""]
    out += [f"Compared at ({m}): {budget_line(b)}." for c in cs for m, b in c.budget.items()] + [""]
    notes = folder_notes(cs)
    out += [f"- {n}" for n in notes] + ([""] if notes else [])
    for c in cs:
        out += ([f"**{_budget_title(c)}**", ""] if many else []) + [f"- {h}" for h in headline(c)] + [""]
    folder, s = _folder_tables(cs), ladder(cs)
    if s is not None:
        folder["scaling"] = scaling.tables(s)
    shown = _sections(s)
    for sid in (sid for sid in MD_SECTIONS if sid in shown):
        out.append(f"## {shown[sid]}\n")
        out += [f"- {n}" for n in scaling.notes(s)] + [""] if sid == "scaling" else []
        per_budget = [] if sid in FOLDER_SECTIONS else cs
        for c in per_budget:
            out += [f"### {_budget_title(c)}\n"] if many else []
            caption, df = _tables(c)[sid][0]
            if sid == "divergences" and df.empty:
                out.append("Every run completed.\n")
                continue
            out += [f"**{caption}**\n", md_table(df), ""]
            if sid == "summary":
                out += [how_to_read(c), ""] + [f"- {n}" for n in method_notes(c)] + [""]
        for caption, df in folder.get(sid, []):
            out += [f"**{caption}**\n", md_table(df), ""]
        note = _empty_note(sid, cs)
        out += [note, ""] if note else []
    out.append("Plots: see report.html in the same folder.")
    return "\n".join(out) + "\n"


def render_terminal(cs: list[Comparison]) -> str:
    lines = []
    for c in cs:
        lines += [f"{c.folder}: compared at " + budget_line(b) for b in c.budget.values()]
        lines += ["", summary_table(c).to_string(index=False), ""] + headline(c)
        if not c.problems.empty:
            lines += ["", "Did not complete:", problems_table(c).to_string(index=False)]
        lines.append("")
    return "\n".join(lines).rstrip()


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
h3{font-size:15px;margin:16px 0 6px} h3.budget{font-size:17px;color:#1f3b57}
table.tbl{border-collapse:collapse;font-size:13px;margin:6px 0 12px}
.tbl th,.tbl td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;white-space:pre-wrap}
.tbl th{background:#eef2f6} .tbl tr:nth-child(even) td{background:#fafbfc}
ul.headline li{margin:4px 0} .notes{font-size:13px;color:#555} p.read{font-size:14px;max-width:1100px}
.fig{margin:10px 0;border-top:1px solid #f0f0f0;padding-top:6px} .empty{color:#777;font-style:italic}
"""


def _html_table(caption: str, df: pd.DataFrame) -> str:
    return f"<h3>{html.escape(caption)}</h3>" + df.to_html(index=False, classes="tbl", border=0, escape=True)


def html_figure(fig) -> str:
    return '<div class="fig">' + fig.to_html(full_html=False, include_plotlyjs=False,
                                              config={"displaylogo": False, "responsive": True}) + "</div>"


def _html_budget(c: Comparison) -> dict[str, list[str]]:
    """Per-budget section id -> its HTML parts."""
    body = {sid: [] for sid in SECTIONS if sid not in FOLDER_SECTIONS}
    body["summary"] += ['<ul class="headline">'] + [f"<li>{html.escape(h)}</li>" for h in headline(c)] + ["</ul>"]
    for sid, items in _tables(c).items():
        body[sid] += [_html_table(cap, df) for cap, df in items]
    body["summary"] += [f'<p class="read">{html.escape(how_to_read(c))}</p>', '<ul class="notes">']
    body["summary"] += [f"<li>{html.escape(n)}</li>" for n in method_notes(c)] + ["</ul>"]
    for sid, fs in plots.figures(c).items():
        body[sid] += [html_figure(f) for f in fs]
    if c.problems.empty:
        body["divergences"] = ['<p class="empty">Every run completed.</p>']
    return body


def render_html(cs: list[Comparison]) -> str:
    many = len(cs) > 1
    body = {sid: [] for sid in SECTIONS | LADDER}
    body["summary"] += [f"<p>{html.escape(n)}</p>" for n in folder_notes(cs)]
    for c in cs:
        for sid, parts in _html_budget(c).items():
            body[sid] += ([f'<h3 class="budget">{_budget_title(c)}</h3>'] if many else []) + parts
    for sid, items in _folder_tables(cs).items():
        body[sid] += [_html_table(cap, df) for cap, df in items]
    body["budgets"] += [html_figure(f) for f in plots.budget_figures(cs)]
    s = ladder(cs)
    if s is not None:
        body["scaling"] += (['<ul class="headline">'] + [f"<li>{html.escape(n)}</li>" for n in scaling.notes(s)]
                            + ["</ul>"] + [_html_table(cap, df) for cap, df in scaling.tables(s)]
                            + [html_figure(f) for f in plots.scaling_figures(cs, s)])
    if cs[0].tuning is not None:
        body["tuning"] += [html_figure(f) for f in plots.tuning_figures(cs[0])]
    for sid in FOLDER_SECTIONS:
        note = _empty_note(sid, cs)
        body[sid] += [f'<p class="empty">{html.escape(note)}</p>'] if note else []

    budgets = "".join(f"<p><b>Compared at</b> ({html.escape(m)}): {html.escape(budget_line(b))}</p>"
                      for c in cs for m, b in c.budget.items())
    nav = "".join(f'<a href="#{sid}">{title}</a>' for sid, title in _sections(s).items())
    sections = "".join(f'<section id="{sid}"><h2>{title}</h2>{"".join(body[sid])}</section>'
                       for sid, title in _sections(s).items())
    title = f"optarena report: {html.escape(cs[0].folder.name)}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f'<style>{CSS}</style><script type="text/javascript">{get_plotlyjs()}</script></head>'
            f"<body><header><h1>{title}</h1>{budgets}</header><nav>{nav}</nav>"
            f"<main>{sections}</main></body></html>")


def write_report(folder: str | Path, baseline: str | None = None,
                 target_loss: float | None = None) -> list[Comparison]:
    """Write report.html and report.md into `folder`; return the Comparisons (one per budget) they show."""
    cs = compare(folder, baseline=baseline, target_loss=target_loss)
    (cs[0].folder / "report.html").write_text(render_html(cs), encoding="utf-8")
    (cs[0].folder / "report.md").write_text(render_md(cs), encoding="utf-8")
    return cs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", help="results/<suite>")
    ap.add_argument("--baseline", default=None,
                    help="the arm every other is compared with: an arm label as the report prints it "
                         "('adamw lr=0.001'), or an optimizer with one arm; default: the suite's "
                         "declared baseline, else the one adamw arm, else the one tuned adamw arm")
    ap.add_argument("--target-loss", type=float, default=None,
                    help="val loss for time-to-target (default: the baseline's final val loss)")
    args = ap.parse_args(argv)
    try:
        cs = write_report(args.folder, args.baseline, args.target_loss)
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(render_terminal(cs))
    print(f"\nwrote {cs[0].folder / 'report.html'} and {cs[0].folder / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
