"""One owner per run: an exclusive flock on `<run folder>/.lock`, held for the whole run.

Whoever trains a run holds it: a single run, each run of a suite (runners.train.run takes it, so
every launcher and tuning worker does), rank 0 of a distributed run for all its ranks, and the
torchrun launcher for the processes it starts. A second process cannot take it and skips the
run; the lock file names the holder (host, pid, start time) for its message. The kernel drops
the lock when its process ends, even by SIGKILL, so a dead run never blocks the next one. The
file stays (removing it would let a third process lock a file the second already has open).

On a shared filesystem the lock is as good as the filesystem's flock:
- NFSv4, and NFSv3 with the lock daemon (lockd/statd), pass flock to the server (Linux emulates
  it with byte-range locks), so processes on different machines exclude each other, unless the
  client mounts with `local_lock=flock` or `local_lock=all` (then each machine sees only its own).
- Lustre needs its clients mounted with `-o flock` (`-o localflock` is per node only; without
  either, flock fails and the run stops with an error line saying so).
- Other cluster filesystems differ: CephFS passes flock to its servers; BeeGFS does only with
  `tuneUseGlobalFileLocks = true` in beegfs-client.conf (its default locks per node); check yours.
Where it is not coherent across machines, run each suite from one machine (SLURM jobs of one
suite get one run each, recorded in slurm.json, so they do not compete).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from runners import parallel
from runners.run_folder import RunError, now

LOCK_FILE = ".lock"
# Set by a launcher that holds a run's lock for the processes it starts (torchrun's ranks).
HELD_FOR_CHILDREN = "OPTARENA_RUN_LOCK_HELD"


class RunLocked(RunError):
    """Another process holds the run; the message names it."""


def _holder(f) -> str:
    # The holder writes its name just after it takes the lock: give it a moment.
    for _ in range(20):
        f.seek(0)
        text = f.read()
        if text:
            break
        time.sleep(0.05)
    try:
        h = json.loads(text)
        return f"host {h['host']} pid {h['pid']} (since {h['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def hold(run_path: Path):
    """Hold the run's lock for the block, or raise RunLocked naming who holds it."""
    run_path.mkdir(parents=True, exist_ok=True)
    f = open(run_path / LOCK_FILE, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(f)
        f.close()
        raise RunLocked(f"{run_path.name} is being run by {holder}") from None
    except OSError as e:  # a filesystem without flock (Lustre mounted without -o flock)
        f.close()
        raise RunError(f"cannot lock {run_path / LOCK_FILE}: {e.strerror}: this filesystem does not "
                       "support flock (on Lustre, mount its clients with -o flock)") from None
    try:
        f.truncate(0)
        f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": now()}) + "\n")
        f.flush()
        yield
    finally:
        f.close()  # releases the lock


def held_for_children(run_path: Path) -> dict:
    """The environment that tells the processes a launcher starts that it holds this run's lock."""
    return {HELD_FOR_CHILDREN: str(run_path.absolute())}


@contextmanager
def owning(run_path: Path, world, device):
    """The run's lock for a training process: rank 0 holds it for every rank (they agree on the
    outcome, so all raise RunLocked or none); none is taken when the launcher holds it."""
    if os.environ.get(HELD_FOR_CHILDREN) == str(run_path.absolute()):
        yield
        return
    with ExitStack() as stack:
        refused = None
        if world.is_main:
            try:
                stack.enter_context(hold(run_path))
            except RunLocked as e:
                refused = e
        if parallel.any_rank(refused is not None, device):
            raise refused or RunLocked(f"{run_path.name} is being run by another process (seen by rank 0)")
        yield
