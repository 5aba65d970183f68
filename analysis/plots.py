"""Plotly figures of a Comparison. Each function returns one titled figure with labelled axes;
an arm keeps its colour in every figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import convert_colors_to_same_type, qualitative, unlabel_rgb
from plotly.subplots import make_subplots

from . import stats
from .compare import Comparison, endpoints
from .scaling import Trend

MIB = 2**20
TEMPLATE = "plotly_white"


def _colors(labels) -> dict[str, str]:
    palette = qualitative.D3 + qualitative.Set2  # hex, then rgb(...) strings past ten arms
    return {a: palette[i % len(palette)] for i, a in enumerate(labels)}


def _rgba(color: str, alpha: float) -> str:
    """Any plotly colour (hex or rgb(...)) with an alpha."""
    r, g, b = unlabel_rgb(convert_colors_to_same_type(color, "rgb")[0][0])
    return f"rgba({r:.0f},{g:.0f},{b:.0f},{alpha})"


def _text(values, fmt: str) -> list[str]:
    """Bar labels; a missing figure (an arm with no completed run) gets none rather than 'nan'."""
    return [format(v, fmt) if np.isfinite(v) else "" for v in values]


def _layout(fig: go.Figure, title: str, x: str, y: str, **kw) -> go.Figure:
    layout = dict(title=title, template=TEMPLATE, height=440, margin=dict(t=80, l=70, r=20, b=60),
                  legend=dict(font=dict(size=11)))
    fig.update_layout(**(layout | kw))
    fig.update_xaxes(title_text=x)
    fig.update_yaxes(title_text=y)
    return fig


def _curves(c: Comparison, x: str) -> go.Figure:
    """Seed-mean val loss per arm with a min-max band over seeds, against `x` (tokens or wall time)."""
    colors, fig = _colors(c.arms.arm), go.Figure()
    val = c.metrics[c.metrics.val_loss.notna() & (c.metrics.step > 0)]
    done = set(c.runs.run_id[c.runs.status == "completed"])
    for arm in c.arms.arm:
        m = val[(val.arm == arm) & val.run_id.isin(done)]
        if m.empty:
            continue
        g = m.groupby("step").agg(x=(x, "mean"), mean=("val_loss", "mean"), lo=("val_loss", "min"),
                                  hi=("val_loss", "max"), n=("val_loss", "size"))
        col = colors[arm]
        fig.add_trace(go.Scatter(x=np.r_[g.x, g.x[::-1]], y=np.r_[g.hi, g.lo[::-1]], fill="toself",
                                 mode="lines", fillcolor=_rgba(col, 0.18), line=dict(width=0),
                                 hoverinfo="skip", legendgroup=arm, showlegend=False))
        fig.add_trace(go.Scatter(x=g.x, y=g["mean"], name=arm, legendgroup=arm, line=dict(color=col),
                                 customdata=g.n, hovertemplate="%{y:.4f} (%{customdata} seeds)"))
    for r in c.runs[c.runs.status == "diverged"].itertuples():
        m = val[val.run_id == r.run_id]
        fig.add_trace(go.Scatter(x=m[x], y=m.val_loss, name=f"{r.arm} s{r.seed} diverged",
                                 legendgroup=r.arm, mode="lines+markers",
                                 line=dict(color=colors[r.arm], dash="dot", width=1),
                                 marker=dict(symbol="x", size=7)))
    return fig


def loss_vs_tokens(c: Comparison) -> go.Figure:
    fig = _curves(c, "tokens")
    fig.update_xaxes(type="log")
    return _layout(fig, "Validation loss vs tokens (mean over seeds, band: min-max)",
                   "tokens (log scale)", "validation loss")


def loss_vs_time(c: Comparison) -> go.Figure:
    return _layout(_curves(c, "wall_time_s"), "Validation loss vs training time (mean over seeds, band: min-max)",
                   "training seconds (wall_time_s: training steps only, evaluations excluded)", "validation loss")


# The marker of an interval unbounded on one side (a failed seed) points that way; open: both sides
# (too few seeds for the test to reject anything).
UNBOUNDED = {(False, False): "circle", (True, False): "triangle-right", (False, True): "triangle-left",
             (True, True): "circle-open"}


def difference(c: Comparison) -> go.Figure:
    """Forest plot of the paired shift to the baseline with its interval; an unbounded side is not drawn."""
    a = c.arms[np.isfinite(c.arms.delta.astype(float))]
    colors, fig = _colors(c.arms.arm), go.Figure()
    for r in a.itertuples():
        up, down = r.delta_hi - r.delta, r.delta - r.delta_lo
        err = dict(type="data", symmetric=False, array=[up if np.isfinite(up) else 0],
                   arrayminus=[down if np.isfinite(down) else 0])
        fig.add_trace(go.Scatter(
            x=[r.delta], y=[r.arm], mode="markers", name=r.arm, error_x=err,
            marker=dict(size=11, color=colors[r.arm], symbol=UNBOUNDED[np.isinf(up), np.isinf(down)]),
            hovertemplate=f"{r.verdict}<br>delta %{{x:.4f}} [{r.delta_lo:.4f}, {r.delta_hi:.4f}]"
                          f"<br>n {r.n_pairs:.0f}, p {r.p_value:.4f}, MDE {r.mde:.4f}<extra>{r.arm}</extra>"))
    fig.add_vline(x=0, line=dict(color="black", dash="dash"))
    return _layout(fig, f"Final loss minus baseline, paired by seed (Hodges–Lehmann shift, 95% interval of the "
                        f"{stats.TEST}; ▸ ◂ unbounded that way, ○ both; left = better)",
                   "loss difference (nats)", "", showlegend=False, height=max(260, 120 + 50 * len(a)))


def memory(c: Comparison) -> go.Figure:
    a, colors = c.arms, _colors(c.arms.arm)
    kind = ", ".join(sorted({k for k in a.peak_mem_kind if k})) or "unknown"
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "optimizer state (exact bytes, per rank)", f"peak memory per rank ({kind})"))
    for col, field in ((1, "opt_state_bytes"), (2, "peak_mem_bytes")):
        fig.add_trace(go.Bar(x=a.arm, y=a[field] / MIB, marker_color=[colors[x] for x in a.arm],
                             text=_text(a[field] / MIB, ".1f"), textposition="outside",
                             hovertemplate="%{y:.2f} MiB<extra>%{x}</extra>"), row=1, col=col)
    if a.cuda_max_reserved_bytes.notna().any():  # the allocator's reserve: peak plus fragmentation
        fig.add_trace(go.Bar(x=a.arm, y=a.cuda_max_reserved_bytes / MIB, name="CUDA max reserved",
                             marker_color="#c7c7c7", text=_text(a.cuda_max_reserved_bytes / MIB, ".1f"),
                             textposition="outside"), row=1, col=2)
    fig = _layout(fig, "Memory: optimizer state vs peak", "", "MiB", barmode="group")
    fig.update_traces(showlegend=False, selector=dict(name=None))
    fig.update_yaxes(rangemode="tozero")
    return fig


def _bars(a, field: str) -> dict:
    """Error bars from the median to the 5th and 95th percentile over steps and seeds."""
    return dict(type="data", symmetric=False, array=a[f"{field}_hi"] - a[field],
                arrayminus=a[field] - a[f"{field}_lo"])


def throughput(c: Comparison) -> go.Figure:
    """tokens/s and the step split per arm; an arm measured on a busier machine is greyed and marked."""
    a, colors = c.arms, _colors(c.arms.arm)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("tokens per second (global)", "seconds per step"))
    mfu = ["MFU " + m if m else "" for m in _text(a.mfu, ".1%")]
    text = [("machine noise " if noisy else "") + f"{t} {m}".strip()
            for noisy, t, m in zip(a.machine_noise, _text(a.tokens_per_s, ",.0f"), mfu)]
    fig.add_trace(go.Bar(x=a.arm, y=a.tokens_per_s, error_y=_bars(a, "tokens_per_s"), text=text,
                         marker_color=["#d9d9d9" if noisy else colors[x] for x, noisy in zip(a.arm, a.machine_noise)],
                         textposition="outside", showlegend=False), row=1, col=1)
    for field, name, color in (("fwd_bwd_s", "forward + backward", "#7f7f7f"),
                               ("opt_s", "optimizer step", "#d62728")):
        fig.add_trace(go.Bar(x=a.arm, y=a[field], name=name, marker_color=color,
                             hovertemplate="%{y:.4f} s<extra>" + name + "</extra>"), row=1, col=2)
    for seconds in c.fwd_bwd.seconds:  # the optimizer-independent forward+backward
        fig.add_hline(y=seconds, line=dict(color="black", dash="dot"), row=1, col=2)
    fig = _layout(fig, "Throughput and step-time split (median over steps and seeds, bars: 5-95%; "
                       "dotted: the common forward+backward)", "", "", barmode="stack")
    fig.update_yaxes(title_text="tokens/s", row=1, col=1)
    fig.update_yaxes(title_text="seconds", row=1, col=2)
    return fig


def pareto(c: Comparison) -> go.Figure:
    """Final loss against optimizer-state memory; the front joins the arms no other arm beats on both."""
    a = c.arms[c.arms.loss_mean.notna()].sort_values(["opt_state_bytes", "loss_mean"])
    colors, fig = _colors(c.arms.arm), go.Figure()
    front = a[a.loss_mean <= a.loss_mean.cummin()]
    fig.add_trace(go.Scatter(x=front.opt_state_bytes / MIB, y=front.loss_mean, mode="lines",
                             line=dict(color="#999", dash="dash", shape="hv"), name="Pareto front"))
    for r in a.itertuples():
        err = dict(type="data", symmetric=False, array=[r.loss_hi - r.loss_mean],
                   arrayminus=[r.loss_mean - r.loss_lo]) if np.isfinite(r.loss_lo) else None
        fig.add_trace(go.Scatter(
            x=[r.opt_state_bytes / MIB], y=[r.loss_mean], mode="markers+text", name=r.arm, text=[r.arm],
            textposition="top center", error_y=err, marker=dict(size=12, color=colors[r.arm]),
            hovertemplate=f"state %{{x:.2f}} MiB<br>peak {r.peak_mem_bytes / MIB:.1f} MiB"
                          f"<br>loss %{{y:.4f}}<extra>{r.arm}</extra>"))
    fig.update_xaxes(range=[0, 1.15 * a.opt_state_bytes.max() / MIB])  # room for the labels
    return _layout(fig, f"Final {c.split} loss vs optimizer-state memory (95% t interval; lower left is better)",
                   "optimizer state per rank (MiB)", f"final {c.split} loss")


def tuning_curves(c: Comparison) -> go.Figure:
    t = c.tuning
    fig = make_subplots(rows=1, cols=2, subplot_titles=("against trials", "against device-seconds"))
    colors = _colors(t.study.unique())
    for study, g in t.groupby("study", sort=False):
        best = stats.best_so_far(g.value)  # a failed trial keeps the previous best
        for col, x in ((1, g.number + 1), (2, g.device_seconds.cumsum())):
            fig.add_trace(go.Scatter(x=x, y=best, name=study, legendgroup=study, showlegend=col == 1,
                                     mode="lines+markers", line=dict(shape="hv", color=colors[study])),
                          row=1, col=col)
    fig = _layout(fig, "Tuning curve: best final val loss so far", "", "best val loss so far")
    fig.update_xaxes(title_text="trials", row=1, col=1)
    fig.update_xaxes(title_text="device-seconds spent", row=1, col=2)
    return fig


def lr_sensitivity(c: Comparison) -> go.Figure:
    """Loss against lr per study; diverged trials as crosses on the top edge; shaded: the stable band."""
    t, s = c.tuning, c.tuning_summary
    colors, fig = _colors(t.study.unique()), go.Figure()
    top = t.value.max() + 0.05 * (t.value.max() - t.value.min() or 1.0)
    for study, g in t.sort_values("lr").groupby("study", sort=False):
        ok, col = g[g.value.notna()], colors[study]
        fig.add_trace(go.Scatter(x=ok.lr, y=ok.value, name=study, legendgroup=study,
                                 mode="lines+markers", line=dict(color=col)))
        bad = g[g.status == "diverged"]
        fig.add_trace(go.Scatter(x=bad.lr, y=[top] * len(bad), name=f"{study} diverged", legendgroup=study,
                                 mode="markers", marker=dict(symbol="x", size=10, color=col)))
        band = s[s.study == study].iloc[0]
        if np.isfinite(band.stable_lo):
            fig.add_vrect(x0=band.stable_lo, x1=band.stable_hi, fillcolor=col, opacity=0.1, line_width=0)
    fig.update_xaxes(type="log")
    return _layout(fig, "Final val loss vs learning rate (shaded: stable band, no divergence)",
                   "learning rate (log scale)", "final validation loss")


def _law_traces(fig: go.Figure, cs: list[Comparison]) -> None:
    """Each baseline family's law once: the fit solid over its budgets and dotted beyond them (where
    a speedup would be extrapolated), the interpolation over its budgets only."""
    laws = {(m, c.arms.family[c.arms.arm == a].iloc[0]): c.laws[m]
            for c in cs for m, a in c.baseline.items() if c.laws[m].kind != "none"}
    for (_, family), law in laws.items():
        lo, hi = law.tokens[0], law.tokens[-1]
        name = f"baseline law ({family}): " + ("fit a·D^-b + c" if law.fit is not None else "interpolation")
        spans = [(np.geomspace(lo, hi, 100), "solid", True)]
        if law.fit is not None:
            spans += [(np.geomspace(lo / 2, lo, 20), "dot", False), (np.geomspace(hi, 2 * hi, 20), "dot", False)]
        for x, dash, legend in spans:
            fig.add_trace(go.Scatter(x=x, y=law.loss(x), mode="lines", name=name, legendgroup=name,
                                     showlegend=legend, line=dict(color="black", dash=dash, width=1.5),
                                     hovertemplate="%{y:.4f} at %{x:,.0f} tokens<extra>law</extra>"))


def loss_vs_budget(cs: list[Comparison]) -> go.Figure:
    """Seed-mean final loss per family at each budget, with a min-max band over seeds, and the
    baseline's law; only completed runs are drawn (a diverged seed is in the tables)."""
    pts = endpoints(cs)
    pts = pts[np.isfinite(pts.loss)]
    families = list(dict.fromkeys(pts.family))
    colors, fig = _colors(families), go.Figure()
    for family in families:
        g = pts[pts.family == family].groupby("tokens").loss.agg(["mean", "min", "max", "size"])
        col = colors[family]
        fig.add_trace(go.Scatter(x=np.r_[g.index, g.index[::-1]], y=np.r_[g["max"], g["min"][::-1]],
                                 fill="toself", mode="lines", fillcolor=_rgba(col, 0.18), line=dict(width=0),
                                 hoverinfo="skip", legendgroup=family, showlegend=False))
        fig.add_trace(go.Scatter(x=g.index, y=g["mean"], name=family, legendgroup=family, mode="lines+markers",
                                 line=dict(color=col), customdata=g["size"],
                                 hovertemplate="%{y:.4f} at %{x:,.0f} tokens (%{customdata} seeds)"))
    _law_traces(fig, cs)
    fig.update_xaxes(type="log")
    return _layout(fig, f"Final {cs[0].split} loss against budget, at the end of each schedule (mean over seeds, "
                        "band: min-max; black: the baseline's law, dotted where extrapolated)",
                   "budget: tokens (log scale)", f"final {cs[0].split} loss")


def figures(c: Comparison) -> dict[str, list[go.Figure]]:
    """Report section id -> the figures of one budget, in reading order."""
    return {"curves": [loss_vs_tokens(c), loss_vs_time(c)], "statistics": [difference(c)],
            "cost": [memory(c), throughput(c)], "pareto": [pareto(c)]}


def budget_figures(cs: list[Comparison]) -> list[go.Figure]:
    """The folder's figures across budgets: none with one budget."""
    return [loss_vs_budget(cs)] if len(cs) > 1 else []


def tuning_figures(c: Comparison) -> list[go.Figure]:
    """The folder's tuning studies (c.tuning is not None)."""
    return [tuning_curves(c), lr_sensitivity(c)]


def _panel_tokens(s, key: float, params: np.ndarray) -> np.ndarray:
    """The budget of a panel at each size: its tokens per parameter times N, or its tokens."""
    return key * params if s.ratios else np.full(params.shape, key)


def speedup_vs_params(s) -> go.Figure:
    """Each arm's speedup against N at every rung (95% interval; open: left out of the trend) and its
    trend with the prediction band, one panel per budget; the target's prediction as a star."""
    panels = s.rungs.drop_duplicates("panel").sort_values("panel")
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=list(panels.panel_label), shared_yaxes=True)
    colors = _colors(s.trends)
    t = s.target
    far = {arm for arm, p in s.predictions.items() if p.refused is None}  # the arms predicted at the target
    star = None if t is None or not far else (
        min(panels.panel, key=lambda k: abs(np.log(t.tokens / t.params / k))) if s.ratios
        else min(panels.panel, key=lambda k: abs(np.log(t.tokens / k))))
    for col, key in enumerate(panels.panel, start=1):
        for arm, g in s.rungs[s.rungs.panel == key].groupby("arm", sort=False):
            c = colors[arm]
            up, down = (g.hi - g.speedup).to_numpy(float), (g.speedup - g.lo).to_numpy(float)
            err = dict(type="data", symmetric=False, array=np.where(np.isfinite(up), up, 0),
                       arrayminus=np.where(np.isfinite(down), down, 0))  # a bound's open side: none
            fig.add_trace(go.Scatter(
                x=g.params, y=g.speedup, mode="markers", name=arm, legendgroup=arm, showlegend=col == 1,
                error_y=err, marker=dict(size=10, color=c, symbol=["circle" if u else "circle-open" for u in g.used]),
                customdata=np.c_[g.tokens, g.label],
                hovertemplate="%{y:.3f}× at N=%{x:,.0f}, D=%{customdata[0]:,} (%{customdata[1]})<extra>" + arm + "</extra>"),
                row=1, col=col)
            trend = s.trends.get(arm)
            if not isinstance(trend, Trend):
                continue
            p = s.predictions.get(arm)
            # Out to the target in its own panel (its budget is the nearest), else just past the rungs.
            top = max(trend.largest * 2, t.params if key == star and arm in far else 0)
            x = np.geomspace(s.rungs.params.min() / 1.5, top, 60)
            value, lo, hi = trend.predict(x, _panel_tokens(s, key, x))
            fig.add_trace(go.Scatter(x=np.r_[x, x[::-1]], y=np.r_[hi, lo[::-1]], fill="toself", mode="lines",
                                     fillcolor=_rgba(c, 0.15), line=dict(width=0), hoverinfo="skip",
                                     legendgroup=arm, showlegend=False), row=1, col=col)
            fig.add_trace(go.Scatter(x=x, y=value, mode="lines", line=dict(color=c, dash="dash"), legendgroup=arm,
                                     name=f"{arm} trend", showlegend=col == 1,
                                     hovertemplate="%{y:.3f}× at N=%{x:.3s}<extra>trend</extra>"), row=1, col=col)
            if key == star and arm in far:
                fig.add_trace(go.Scatter(
                    x=[t.params], y=[p.value], mode="markers", name=f"{arm} at the target", legendgroup=arm,
                    showlegend=False, marker=dict(symbol="star", size=15, color=c, line=dict(color="black", width=1)),
                    error_y=dict(type="data", symmetric=False, array=[p.hi - p.value], arrayminus=[p.value - p.lo]),
                    hovertemplate=f"{p.value:.3f}× [{p.lo:.3f}, {p.hi:.3f}] at the target: N={t.params:,.0f}, "
                                  f"D={t.tokens:,.0f}<extra>{arm}</extra>"),
                    row=1, col=col)
        fig.add_hline(y=1, line=dict(color="black", dash="dot"), row=1, col=col)
    fig.update_xaxes(type="log", title_text="parameters N (log scale)")
    fig.update_yaxes(type="log")
    return _layout(fig, f"Speedup against {s.baseline} vs model size per budget (bars: 95% interval; open: not in "
                        "the trend; band: 95% prediction interval; ★ the target, at the nearest budget)",
                   "parameters N (log scale)", "token-equivalent speedup (log scale)")


def loss_vs_tokens_per_rung(cs: list[Comparison]) -> go.Figure:
    """Seed-mean val loss against tokens for each arm at each budget, one panel per model size, by
    parameters; one colour per optimizer (its family without the model)."""
    runs = pd.concat([c.runs for c in cs])
    params = runs.groupby("model").param_count.median().sort_values()
    fig = make_subplots(rows=1, cols=len(params), shared_yaxes=True,
                        subplot_titles=[f"{m} ({p:,.0f} parameters)" for m, p in params.items()])
    names = {a: f.removeprefix(f"{m}/") for c in cs for a, f, m in zip(c.arms.arm, c.arms.family, c.arms.model)}
    colors, shown = _colors(dict.fromkeys(names.values())), set()
    for c in cs:
        done = set(c.runs.run_id[c.runs.status == "completed"])
        val = c.metrics[c.metrics.val_loss.notna() & (c.metrics.step > 0) & c.metrics.run_id.isin(done)]
        for (model, arm), g in val.groupby(["model", "arm"], sort=False):
            m = g.groupby("step").agg(tokens=("tokens", "mean"), loss=("val_loss", "mean"))
            name = names[arm]
            fig.add_trace(go.Scatter(x=m.tokens, y=m.loss, mode="lines", name=name, legendgroup=name,
                                     showlegend=name not in shown, line=dict(color=colors[name], width=1.5),
                                     hovertemplate=f"%{{y:.4f}} at %{{x:,.0f}} tokens<extra>{arm}, {c.tokens:,}</extra>"),
                          row=1, col=list(params.index).index(model) + 1)
            shown.add(name)
    fig.update_xaxes(type="log", title_text="tokens (log scale)")
    return _layout(fig, "Validation loss against tokens at every rung (mean over seeds; one line per arm and budget)",
                   "tokens (log scale)", "validation loss")


def scaling_figures(cs: list[Comparison], s) -> list[go.Figure]:
    """The scaling section's figures (s: an analysis.scaling.Scaling)."""
    return [speedup_vs_params(s), loss_vs_tokens_per_rung(cs)]
