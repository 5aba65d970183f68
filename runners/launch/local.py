"""Runs on this machine: one after another in this process, or with the suite's `workers=N` in N
worker processes that share the cores (each with cores / N torch threads: small CPU models run
fastest with one thread per process, and a suite of many small runs is done N times sooner).

A run that fails (recorded in its run.json) or that another process holds (skipped) does not
stop the others; runners.launch.settle reports them once all have ended."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed

from runners.config import run_id
from runners.launch import describe, for_the_user, forwarding_signals, settle
from runners.train import INTERRUPT_SIGNALS, Interrupted, run


def launch(runs: list[dict], launcher_cfg: dict) -> None:
    workers = min(launcher_cfg.get("workers", 1), len(runs))
    ended = {}
    if workers <= 1:
        for i, cfg in enumerate(runs, 1):
            print(f"[{i}/{len(runs)}] {run_id(cfg)}", flush=True)
            ended[run_id(cfg)] = _attempt(run, cfg)
        settle(ended)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    interrupted = None
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_one_worker, initargs=(threads,)) as pool, \
            forwarding_signals(lambda: (c.pid for c in multiprocessing.active_children())):
        pending = {pool.submit(_pool_run, cfg): cfg for cfg in runs}
        print(f"{len(runs)} runs on {workers} worker processes of {threads} thread(s)", flush=True)
        for i, done in enumerate(as_completed(pending), 1):
            if done.cancelled():
                continue
            name = run_id(pending[done])
            ended[name] = error = done.exception()
            if isinstance(error, Interrupted):
                # The signal was meant for the whole suite: start nothing more.
                interrupted = interrupted or error
                for queued in pending:
                    queued.cancel()  # those not yet begun; leaving the block waits for the rest
                continue
            outcome = done.result()["status"] if error is None else describe(error)
            print(f"[{i}/{len(runs)}] {name}: {outcome}", flush=True)
    if interrupted:
        raise interrupted
    settle(ended)


_stopped = None  # in a worker: the Interrupted after which it starts no other run


def _pool_run(cfg: dict) -> dict:
    global _stopped
    if _stopped is not None:
        raise Interrupted(f"not started: {_stopped}")
    try:
        return run(cfg)
    except Interrupted as e:
        _stopped = e
        raise


def _attempt(run, cfg: dict) -> BaseException | None:
    """Run one run in this process; what stopped it, if anything (an interruption stops the
    suite: the signal was meant for all of it)."""
    from runners.lock import RunLocked

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

    def stop_between_runs(signum, _frame):  # during a run, the run's own handler has the signal
        global _stopped
        _stopped = Interrupted(f"{signal.Signals(signum).name} between runs")

    for sig in INTERRUPT_SIGNALS:
        signal.signal(sig, stop_between_runs)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
