"""Fault injection for tests/test_faults.py: a process that kills itself at a named point.

    OPTARENA_FAULT=before-rename:state.pt@2 python -m runners.train ...

SIGKILLs the process the 2nd time (`@N`; default the 1st) it reaches the point:

  before-rename:NAME, after-rename:NAME   around the rename that puts run-folder file NAME in
                                          place (state.pt, previous.pt, manifest.json, run.json,
                                          config.yaml, metrics.jsonl)
  write:NAME                              in the middle of a write to NAME (a checkpoint's
                                          temporary file, a metrics.jsonl row): half of that
                                          write reaches the disk, then the process dies

With the variable unset, as always outside the tests, a point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "OPTARENA_FAULT"
_reached: dict[str, int] = {}


def _armed() -> tuple[str, int] | None:
    spec = os.environ.get(ENV)
    if not spec:
        return None
    point, _, nth = spec.partition("@")
    return point, int(nth or 1)


def _due(point: str) -> bool:
    armed = _armed()
    if armed is None or armed[0] != point:
        return False
    _reached[point] = _reached.get(point, 0) + 1
    return _reached[point] == armed[1]


def reach(point: str) -> None:
    if _due(point):
        os.kill(os.getpid(), signal.SIGKILL)


class _TornWriter:
    """A file whose due write stops halfway: the bytes so far are flushed, then the process dies."""

    def __init__(self, f, point: str):
        self._f, self._point = f, point

    def write(self, data) -> int:
        if _due(self._point):
            self._f.write(memoryview(data)[: len(data) // 2])
            self._f.flush()
            os.fsync(self._f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)


def writer(f, name: str):
    """`f`, or when the armed fault is `write:<name>`, a stand-in that dies in its due write."""
    armed = _armed()
    return _TornWriter(f, f"write:{name}") if armed and armed[0] == f"write:{name}" else f
