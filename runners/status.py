"""Where each run of a suite stands, read from its run folder; writes nothing.

    python -m runners.suite suite=NAME status=true      # make status suite=NAME

One row per run: model, optimizer, lr, seed, run_id, status, step of total, the last train and
val loss, and the time left. Status is `new` for a run that has no run.json yet, else run.json's
(running, completed, diverged, pruned, failed, interrupted); when run.json is torn or lost, what
its checkpoints say (RunFolder.record: `interrupted`, or a finished run's final status). A
`running` run whose folder has not been written to for much longer than its logging interval is
shown as `running?`: its process may have died without a chance to say so (SIGKILL, out of
memory, a lost node), or it may be busy with something long (a checkpoint, torch.compile). Its
`.lock` file names the process that holds it (or held it last); taking the lock to find out
would make a run starting that moment skip itself, so this stays a hint.

Time left: a run that has made progress takes its own measured seconds per step (wall_time_s of
its last metrics row over its step, training time only) times the steps left; a new run the
plan's estimate (runners.plan.estimate on the plan's device), marked with `~`. Finished runs
(completed, diverged, pruned) have none.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from runners import plan as planning
from runners.run_folder import FINISHED
from runners.suite import plan_device, run_folder, world_size

# `running` with nothing written for longer than this (and than STALE_INTERVALS logging
# intervals) is shown as `running?`.
STALE_AFTER_S = 900
STALE_INTERVALS = 10
TAIL_CHUNK = 64 * 1024
ORDER = ("completed", "diverged", "pruned", "running", "running?", "interrupted", "failed", "new")


def tail_rows(path: Path, chunk: int = TAIL_CHUNK) -> tuple[dict | None, dict | None, dict | None]:
    """(last row, last row with a train_loss, last row with a val_loss) of a metrics.jsonl, read
    backwards from its end only as far as needed. A torn line (a row being written, or cut by a
    kill) is skipped; a missing file gives (None, None, None)."""
    last = train = val = None
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None, None, None
    with f:
        pos = f.seek(0, os.SEEK_END)
        rest = b""  # the start of a line whose beginning lies before `pos`
        while pos > 0 and (last is None or train is None or val is None):
            n = min(chunk, pos)
            pos -= n
            f.seek(pos)
            lines = (f.read(n) + rest).split(b"\n")
            rest = lines.pop(0) if pos > 0 else b""
            for line in reversed(lines):
                row = _parse(line)
                if row is None:
                    continue
                last = last or row
                if train is None and "train_loss" in row:
                    train = row
                if val is None and "val_loss" in row:
                    val = row
    return last, train, val


def _parse(line: bytes) -> dict | None:
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("step"), int) else None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _loss(row: dict | None, key: str) -> str:
    if row is None:
        return "-"
    value = row.get(key)
    return "nan" if value is None else f"{value:.4f}"  # null: a non-finite loss


def run_state(cfg: dict, device: str, world_size: int, now: float | None = None) -> dict:
    """One run's status, progress, last losses and seconds left (None when finished)."""
    folder = run_folder(cfg)
    total = cfg["budget"]["steps"]
    info = folder.record()
    if info is None:
        return {"status": "new", "step": 0, "total": total, "train": None, "val": None,
                "seconds_left": planning.estimate(cfg, device, world_size).seconds, "estimated": True}
    status = info.get("status") or "?"
    total = info.get("total_steps") or total
    last, train, val = tail_rows(folder.metrics_path)
    # run.json's step is written when a run starts and ends; the rows say how far it is now.
    step = max(info.get("step") or 0, last["step"] if last else 0)
    wall = (last or {}).get("wall_time_s")
    per_step = wall / last["step"] if wall and last["step"] > 0 else None
    if status in FINISHED:
        left, estimated = None, False
    elif per_step is not None:
        left, estimated = per_step * max(total - step, 0), False
    else:  # started, no timed step yet: the plan's estimate for what is left
        est = planning.estimate(cfg, device, world_size).seconds
        left, estimated = est * max(total - step, 0) / total, True
    if status == "running":
        written = max(filter(None, (_mtime(folder.path / "run.json"), _mtime(folder.metrics_path))),
                      default=None)
        b = cfg["budget"]
        # a logging interval: log_every steps, plus an evaluation (a forward over val_tokens,
        # a third of a step's cost per token)
        log_every = (cfg.get("train") or {}).get("log_every") or 1
        eval_steps = (cfg["data"].get("val_tokens") or 0) / (3 * b["global_batch"] * b["seq_len"])
        interval = (per_step or 0.0) * (log_every + eval_steps)
        quiet = (now if now is not None else time.time()) - written if written is not None else 0.0
        if quiet > max(STALE_AFTER_S, STALE_INTERVALS * interval):
            status = "running?"
    return {"status": status, "step": step, "total": total, "train": train, "val": val,
            "seconds_left": left, "estimated": estimated}


def status_text(suite_cfg: dict, resolved: list[dict]) -> str:
    """The status table of a suite's resolved runs, with a header and a footer line."""
    device, ws = plan_device(suite_cfg), world_size(suite_cfg)
    now = time.time()
    rows = [("model", "optimizer", "lr", "seed", "run_id", "status", "step", "train loss", "val loss",
             "time left")]
    counts: dict[str, int] = {}
    total_left, any_estimated = 0.0, False
    for cfg in resolved:
        s = run_state(cfg, device, ws, now)
        rid = run_folder(cfg).path.name
        counts[s["status"]] = counts.get(s["status"], 0) + 1
        if s["seconds_left"] is None:
            left = "-"
        else:
            total_left += s["seconds_left"]
            any_estimated |= s["estimated"]
            left = ("~" if s["estimated"] else "") + planning.human_seconds(s["seconds_left"])
        rows.append((cfg["model"]["name"], cfg["optimizer"]["name"], f"{cfg['optimizer']['lr']:g}",
                     cfg["seed"], rid, s["status"], f"{s['step']}/{s['total']}",
                     _loss(s["train"], "train_loss"), _loss(s["val"], "val_loss"), left))
    where = Path(suite_cfg["results_dir"]) / suite_cfg["suite"]
    n = len(resolved)
    head = f"suite {suite_cfg['suite']}: {n} run{'s' if n != 1 else ''} under {where}"
    order = [k for k in ORDER if k in counts] + sorted(k for k in counts if k not in ORDER)
    foot = ", ".join(f"{counts[k]} {k}" for k in order)
    foot += f"; about {planning.human_seconds(total_left)} left" if total_left else "; nothing left to run"
    if any_estimated:
        foot += f" (~: the plan's estimate on {device} x {ws})"
    lines = [head, planning.text_table(rows), foot]
    if "running?" in counts:
        lines.append(f"running?: run.json says running but nothing was written for over "
                     f"{planning.human_seconds(STALE_AFTER_S)}; its process may be gone "
                     "(if so, running the suite again resumes it from its checkpoint)")
    return "\n".join(lines)
