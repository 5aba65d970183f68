"""Runs on this machine: one after another in this process, or with the suite's `workers=N` in N
worker processes that share the cores (each with cores / N torch threads: small CPU models run
fastest with one thread per process, and a suite of many small runs is done N times sooner).

A run that fails (recorded in its run.json) or that another process holds (skipped) does not
stop the others; runners.launch.settle reports them once all have ended."""

from __future__ import annotations

import multiprocessing
import os
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed

from runners.config import run_id
from runners.launch import describe, for_the_user, settle


def launch(runs: list[dict], launcher_cfg: dict) -> None:
    from runners.train import run

    workers = min(launcher_cfg.get("workers", 1), len(runs))
    ended = {}
    if workers <= 1:
        for i, cfg in enumerate(runs, 1):
            print(f"[{i}/{len(runs)}] {run_id(cfg)}", flush=True)
            ended[run_id(cfg)] = _attempt(run, cfg)
        settle(ended)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_one_worker, initargs=(threads,)) as pool:
        pending = {pool.submit(run, cfg): cfg for cfg in runs}
        print(f"{len(runs)} runs on {workers} worker processes of {threads} thread(s)", flush=True)
        for i, done in enumerate(as_completed(pending), 1):
            name = run_id(pending[done])
            ended[name] = error = done.exception()
            outcome = done.result()["status"] if error is None else describe(error)
            print(f"[{i}/{len(runs)}] {name}: {outcome}", flush=True)
    settle(ended)


def _attempt(run, cfg: dict) -> BaseException | None:
    """Run one run in this process; what stopped it, if anything (an interruption stops the
    suite: the signal was meant for all of it)."""
    from runners.lock import RunLocked
    from runners.train import Interrupted

    try:
        run(cfg)
    except Interrupted:
        raise
    except Exception as e:
        if isinstance(e, RunLocked):
            print(f"skipped: {e}", flush=True)
        else:
            if not for_the_user(e):  # a bug: show where it came from
                traceback.print_exc()
            print(f"{run_id(cfg)}: {describe(e)}", file=sys.stderr, flush=True)
        return e
    return None


def _one_worker(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
