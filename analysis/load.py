"""A results folder -> pandas: one row per run, one row per logged step, one row per tuning trial.

Reads `results/<suite>/<run_id>/{run.json,metrics.jsonl}` as the training engine writes them
(schema_version 1) and, when tuning ran, `results/<suite>/tuning/*.json` (format below).
Anything it cannot read faithfully is refused with a one-line `ResultsError`, never guessed at.

Tuning files (one per study, i.e. per optimizer and model), schema_version 1:
    {"schema_version": 1, "optimizer": "adamw", "model": "nano", "n_trials": 20,
     "trials": [{"number": 0, "params": {"lr": 0.001}, "value": 2.01,
                 "status": "completed", "device_seconds": 35.2, "run_id": "..."}]}
`value` is the trial's final val loss (null when it diverged or failed); `status` uses the run
statuses; `device_seconds` is the device time the trial cost (wall time x devices).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

SCHEMA_VERSION = 1  # the run.json / tuning-file version this analysis reads
STATUSES = ("running", "completed", "diverged", "pruned", "failed", "interrupted")
SUMMARY_FIELDS = (
    "final_val_loss", "final_test_loss", "best_val_loss", "tokens", "wall_time_s", "tokens_per_s", "mfu",
    "peak_mem_bytes", "peak_mem_kind", "cuda_max_reserved_bytes", "opt_state_bytes",
    "param_count", "time_fwd_bwd_s", "time_opt_s",
)
METRIC_FIELDS = (
    "run_id", "step", "tokens", "train_loss", "val_loss", "lr", "grad_norm", "time_fwd_bwd_s",
    "time_opt_s", "tokens_per_s", "wall_time_s", "peak_mem_bytes",
)


class ResultsError(Exception):
    """A results folder the analysis cannot use; the message is one line meant for the user."""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ResultsError(f"{path}: cannot read it as JSON ({e})") from None


def _check_version(path: Path, doc: dict) -> None:
    found = doc.get("schema_version") if isinstance(doc, dict) else None
    if found != SCHEMA_VERSION:
        raise ResultsError(
            f"{path.parent}: {path.name} has schema_version {found!r}; "
            f"this analysis reads schema_version {SCHEMA_VERSION} only"
        )


def _flatten(d: dict, prefix: str = "") -> dict:
    """{'budget': {'steps': 300}} -> {'budget.steps': 300}; lists become tuples (hashable)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = tuple(v) if isinstance(v, list) else v
    return out


def config_hash(config: dict) -> str:
    """sha256 of the config as canonical JSON, shortened: identical configs, identical hashes."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _run_row(path: Path, doc: dict) -> dict:
    cfg, env, summary = doc.get("config") or {}, doc.get("env") or {}, doc.get("summary") or {}
    if doc.get("status") not in STATUSES:
        raise ResultsError(f"{path}: unknown status {doc.get('status')!r} (expected one of {STATUSES})")
    opt = cfg.get("optimizer") or {}
    row = {
        "run_id": doc.get("run_id", path.parent.name),
        "status": doc["status"],
        "model": (cfg.get("model") or {}).get("name"),
        "optimizer": opt.get("name"),
        "lr": opt.get("lr"),
        "seed": cfg.get("seed"),
        # Everything that defines the optimizer arm except the seed, as one comparable key.
        "hparams": json.dumps({k: v for k, v in opt.items() if k != "name"}, sort_keys=True),
        "step": doc.get("step"),
        "total_steps": doc.get("total_steps"),
        "diverged_at_step": doc.get("diverged_at_step"),
        "error": doc.get("error"),
        "updated_at": doc.get("updated_at"),
        "schema_version": doc["schema_version"],
        "config_hash": config_hash(cfg),
        "path": str(path.parent),
        "config": cfg,
        "env.packages": env.get("packages") or {},
    }
    row.update({k: summary.get(k) for k in SUMMARY_FIELDS})
    row.update({f"env.{k}": v for k, v in env.items() if k != "packages"})
    row.update(_flatten({k: v for k, v in cfg.items() if k not in ("seed",)}, "cfg."))
    return row


def _read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl rows; a torn final line (a job killed mid-append) is dropped. Any other line
    that is not a JSON object with an integer step, or a step that does not follow the one before
    (a row doubled, as when two processes wrote one run), is refused."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                break
            raise ResultsError(f"{path}: line {i + 1} is not JSON") from None
        step = row.get("step") if isinstance(row, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            raise ResultsError(f"{path}: line {i + 1} is not a JSON object with an integer step")
        if rows and step <= rows[-1]["step"]:
            raise ResultsError(f"{path}: line {i + 1} is step {step}, after step {rows[-1]['step']}: "
                               "rows doubled or out of order")
        rows.append(row)
    return rows


def load_runs(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, metrics): a runs table, one row per run folder, and a long metrics table keyed by run_id."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ResultsError(f"{folder}: no such results folder")
    run_files = sorted(folder.glob("*/run.json"))
    if not run_files:
        raise ResultsError(f"{folder}: no runs (no */run.json) in this folder")
    runs, metrics, seen = [], [], {}
    for rf in run_files:
        doc = _read_json(rf)
        _check_version(rf, doc)
        row = _run_row(rf, doc)
        if row["run_id"] in seen:  # a copied or renamed run folder: its runs would count twice
            raise ResultsError(f"{folder}: run {row['run_id']} is in two folders, {seen[row['run_id']]} and "
                               f"{rf.parent.name}: keep one")
        seen[row["run_id"]] = rf.parent.name
        runs.append(row)
        for m in _read_metrics(rf.parent / "metrics.jsonl"):
            metrics.append({"run_id": row["run_id"], **m})
    runs_df = pd.DataFrame(runs)
    metrics_df = pd.DataFrame(metrics)
    metrics_df = metrics_df.reindex(columns=list(dict.fromkeys(METRIC_FIELDS + tuple(metrics_df.columns))))
    num = [c for c in metrics_df.columns if c != "run_id"]
    # Non-finite losses are written as null; everything numeric becomes float with NaN for gaps.
    metrics_df[num] = metrics_df[num].apply(pd.to_numeric, errors="coerce")
    return runs_df, metrics_df.sort_values(["run_id", "step"], kind="stable").reset_index(drop=True)


def load_declared(folder: str | Path) -> dict:
    """What the suite declared of its results (runners.suite.declare): {baseline: ...}; {} when
    the runs came from single `runners.train` runs or sweeps, which declare nothing."""
    path = Path(folder) / "suite.json"
    return _read_json(path) if path.exists() else {}


def load_tuning(folder: str | Path) -> pd.DataFrame | None:
    """One row per tuning trial from `<folder>/tuning/*.json`, or None when tuning did not run."""
    files = sorted((Path(folder) / "tuning").glob("*.json"))
    if not files:
        return None
    rows = []
    for f in files:
        doc = _read_json(f)
        _check_version(f, doc)
        for t in doc.get("trials", []):
            params = t.get("params") or {}
            rows.append({
                "study": f.stem, "optimizer": doc.get("optimizer"), "model": doc.get("model"),
                "n_trials": doc.get("n_trials"), "number": t.get("number"), "lr": params.get("lr"),
                "params": json.dumps(params, sort_keys=True), "value": t.get("value"),
                "status": t.get("status"), "device_seconds": t.get("device_seconds"),
                "run_id": t.get("run_id"),
            })
    if not rows:
        return None
    df = pd.DataFrame(rows)
    for c in ("lr", "value", "device_seconds"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df.sort_values(["study", "number"], kind="stable").reset_index(drop=True)
