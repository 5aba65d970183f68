"""Launchers: where the runs of a suite execute.

Each launcher module has `launch(runs, launcher_cfg)`, which takes resolved run configs (already
checked, finished ones already dropped) and returns when every run has ended or, for a launcher
that only submits, when every run is queued. A run that fails does not stop the others: the
local and torchrun launchers run them all, then `settle` names the failed ones in LaunchFailed.
"""

from __future__ import annotations

import importlib
import os
import signal
from collections.abc import Callable, Iterable
from contextlib import contextmanager

LAUNCHERS = ("local", "torchrun", "slurm")


class LaunchFailed(RuntimeError):
    """Some runs did not finish; the message names each, with where to look."""


def launch(runs: list[dict], launcher_cfg: dict) -> None:
    name = launcher_cfg.get("name")
    if name not in LAUNCHERS:
        raise ValueError(f"launcher.name={name!r}: choose one of {', '.join(LAUNCHERS)}")
    importlib.import_module(f"runners.launch.{name}").launch(runs, launcher_cfg)


@contextmanager
def forwarding_signals(children: Callable[[], Iterable[int]]):
    """A stop signal sent to this process alone (kill PID) reaches `children()` (their pids at
    the moment it arrives) too, so that their runs checkpoint and stop as this process's own run
    would, instead of running on without it."""
    from runners.train import INTERRUPT_SIGNALS

    def forward(signum, _frame):
        for pid in children():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:  # it ended between the listing and the signal
                pass

    previous = {sig: signal.signal(sig, forward) for sig in INTERRUPT_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def for_the_user(error: BaseException) -> bool:
    """An error whose message says what to do (a refused config or resume, a full disk, a run
    held by another process), not a bug to show the traceback of."""
    from runners.schema import ConfigError

    return isinstance(error, ConfigError) or hasattr(error, "run_status")


def describe(error: BaseException) -> str:
    """Why a run did not finish, in one line."""
    from runners.schema import ConfigError

    if isinstance(error, ConfigError):
        return "; ".join(error.errors)
    return str(error) if for_the_user(error) else f"{type(error).__name__}: {error}"


def settle(ended: dict[str, BaseException | None]) -> None:
    """Once every run has ended (run_id -> its exception, None when it finished): name the runs
    another process holds (skipped: that process runs them), and raise LaunchFailed naming each
    run that failed and why (their run.json says it too)."""
    from runners.lock import RunLocked

    skipped = [name for name, e in ended.items() if isinstance(e, RunLocked)]
    failed = {name: e for name, e in ended.items() if e is not None and name not in skipped}
    if skipped:
        print(f"{len(skipped)} of {len(ended)} runs skipped, held by other processes: {', '.join(skipped)}",
              flush=True)
    if failed:
        lines = [f"  {name}: {describe(e)}" for name, e in failed.items()]
        raise LaunchFailed(f"{len(failed)} of {len(ended)} runs did not finish (run the suite again to "
                           "retry them):\n" + "\n".join(lines))
