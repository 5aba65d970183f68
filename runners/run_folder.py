"""A run is a folder: results/<suite>/<run_id>/{config.yaml, run.json, metrics.jsonl, ckpt/}.

Every file but metrics.jsonl is replaced atomically (temp file + fsync + rename), so a job killed
at any instant leaves the previous version, never a torn one; a killed write's temporary file is
removed at the run's next start. metrics.jsonl is append-only; on resume its rows are checked
(each a JSON object with a step, one per logged step up to the checkpoint) and cut back to the
checkpoint's step, so a resumed run continues it with no row lost or duplicated.

When a file of the run cannot be written because the disk (or a quota) is full, the error is a
DiskFull that names the file, the bytes it needs (when known) and the bytes free. However a run
ends, run.json says so (`recording`); a run.json that is torn or missing is read back from
config.yaml and the checkpoints' manifest (`record`), and rebuilt from them at the next start.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
from contextlib import contextmanager
from importlib import metadata
from itertools import takewhile
from pathlib import Path

import yaml

from runners import faults

SCHEMA_VERSION = 1
FINISHED = ("completed", "diverged", "pruned")
PACKAGES = ("torch", "numpy", "optarena", "hydra-core", "optuna", "pandas", "submitit", "wandb")
MANIFEST = "manifest.json"  # in ckpt/: the run's checkpoints, newest first (runners/checkpoint.py)


class RunError(RuntimeError):
    """A run cannot go on, for the reason its one-line message gives; recorded in run.json as
    `run_status`."""

    run_status = "failed"


class DiskFull(RunError):
    """A file of the run could not be written: no space (or quota) left where it goes."""


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds `path` (or would: its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def disk_full(path: Path, needed: int | None, error: BaseException) -> DiskFull | None:
    """`error` as a DiskFull when it came from a full disk, else None. OSError says so by its
    errno; torch.save says `unexpected pos` instead, so any error of a write that needs more than
    is free counts as one."""
    free = free_bytes(path)
    code = error.errno if isinstance(error, OSError) else None
    if code not in (errno.ENOSPC, errno.EDQUOT) and not (needed is not None and needed > free):
        return None
    what = "disk quota exceeded" if code == errno.EDQUOT else "disk full"
    need = f"it needs {needed:,} bytes and " if needed is not None else ""
    return DiskFull(f"{what}: cannot write {path}: {need}{free:,} bytes are free there")


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextmanager
def temp_file(path: Path, needed: int | None = None):
    """A binary file beside `path` (temp_path(path)), whole on disk (fsynced) when the block ends
    without an error, removed when it does not. `needed`: the bytes it will take, for the message
    of a full disk."""
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            yield faults.writer(f, path.name)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        full = disk_full(path, needed, e)
        if full is not None:
            raise full from None
        raise


def replace(src: Path, dst: Path) -> None:
    faults.reach(f"before-rename:{dst.name}")
    os.replace(src, dst)
    faults.reach(f"after-rename:{dst.name}")


@contextmanager
def atomic_file(path: Path, needed: int | None = None):
    """A binary file that appears at `path`, whole, only when the block ends without an error;
    until then (and after a kill) `path` keeps its previous content."""
    with temp_file(path, needed) as f:
        yield f
    replace(temp_path(path), path)


def atomic_write(path: Path, data: str | bytes) -> None:
    data = data.encode() if isinstance(data, str) else data
    with atomic_file(path, len(data)) as f:
        f.write(data)


def _overwrite_in_place(path: Path, data: bytes) -> bool:
    """Write `data` over `path` in the blocks it already holds (no new space needed), if they are
    enough: how run.json records a run's end on a full disk. Not atomic: a torn run.json is
    rebuilt at the run's next start."""
    try:
        if path.stat().st_blocks * 512 < len(data):
            return False
    except FileNotFoundError:
        return False
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate()
        f.flush()
        os.fsync(f.fileno())
    return True


def _finite(value):
    """JSON has no NaN/inf: a non-finite float is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def git_state(repo: Path) -> tuple[str | None, bool | None]:
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        return commit, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return None, None


def environment(device: str, device_name: str, world_size: int) -> dict:
    commit, dirty = git_state(Path(__file__).resolve().parent.parent)
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "git_commit": commit, "git_dirty": dirty, "python": platform.python_version(),
        "hostname": socket.gethostname(), "packages": packages, "device": device,
        "device_name": device_name, "world_size": world_size, "started_at": now(),
    }


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`; None when it is missing, unreadable, torn, or not an object."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _row(line: str) -> dict | None:
    """A metrics row: a JSON object with an integer step; None for anything else."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    ok = isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row["step"], bool)
    return row if ok else None


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.ckpt_dir = self.path / "ckpt"
        self.metrics_path = self.path / "metrics.jsonl"
        self.info_path = self.path / "run.json"
        self.config_path = self.path / "config.yaml"
        self.manifest_path = self.ckpt_dir / MANIFEST
        self.info = None  # the record last written: the dict the training loop keeps up to date
        self._metrics = None

    # ---- run.json ------------------------------------------------------------------------------

    def status(self) -> str | None:
        """None for a run never started; otherwise its status (`record`)."""
        return (self.record() or {}).get("status")

    def is_finished(self) -> bool:
        return self.status() in FINISHED

    def create(self, config: dict) -> None:
        """The folder, and config.yaml: the config that runs (rewritten when a resume changes a
        train.* key)."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir.mkdir(exist_ok=True)
        atomic_write(self.config_path, yaml.safe_dump(config, sort_keys=False))

    def write_info(self, info: dict) -> None:
        self.info = info
        text = json.dumps(_clean({"schema_version": SCHEMA_VERSION, **info, "updated_at": now()}), indent=2)
        data = (text + "\n").encode()
        try:
            atomic_write(self.info_path, data)
        except DiskFull:
            if not _overwrite_in_place(self.info_path, data):
                raise

    def read_info(self) -> dict | None:
        return read_json(self.info_path)

    def record(self) -> dict | None:
        """run.json, or when it is torn or missing, what config.yaml and the newest checkpoint's
        manifest entry say (status `interrupted`); either way, a final checkpoint's outcome (a
        run killed after its final checkpoint, before run.json said so). None for a run that
        never started."""
        info = self.read_info()
        entries = self.checkpoints() or []
        final = entries[0]["progress"].get("final") if entries else None
        if info is not None:
            if final and info.get("status") not in FINISHED:
                info = {**info, **final, "step": entries[0]["step"], "error": None}
            return info
        if not entries and not self.info_path.exists():
            return None
        try:
            config = yaml.safe_load(self.config_path.read_text())
        except (OSError, yaml.YAMLError):
            config = None
        config = config if isinstance(config, dict) else {}
        progress = entries[0]["progress"] if entries else {}
        final = progress.get("final") or {}
        return {"run_id": self.path.name, "suite": config.get("suite"), "config": config,
                "status": final.get("status", "interrupted"), "step": progress.get("step", 0),
                "total_steps": (config.get("budget") or {}).get("steps"),
                "diverged_at_step": final.get("diverged_at_step"), "error": None,
                "summary": final.get("summary"), "data_fingerprint": progress.get("data_fingerprint"),
                "drift": progress.get("drift", [])}

    @contextmanager
    def recording(self, cfg: dict):
        """run.json ends in the run's real state: an exception that ends the run is recorded in it
        (status `interrupted` for an interruption, else `failed`, with the error); a ConfigError
        (a refused resume: nothing was written) is not. When run.json cannot be written either,
        stderr says so."""
        try:
            yield
        except BaseException as e:
            from runners.schema import ConfigError

            if not isinstance(e, ConfigError):
                self._record_end(e, cfg)
            raise

    def _record_end(self, e: BaseException, cfg: dict) -> None:
        info = self.info or self.record() or {"run_id": self.path.name, "suite": cfg["suite"], "config": cfg,
                                              "step": 0, "total_steps": cfg["budget"]["steps"]}
        status = getattr(e, "run_status", "failed")
        info.update(status=status, error=str(e) if hasattr(e, "run_status") else f"{type(e).__name__}: {e}")
        try:
            self.write_info(info)
        except (OSError, RunError) as why:
            print(f"error: cannot record in {self.info_path} that the run is {status}: {why}",
                  file=sys.stderr)

    # ---- checkpoints' manifest -----------------------------------------------------------------

    def checkpoints(self) -> list[dict] | None:
        """The manifest's entries, newest first (runners/checkpoint.py); None without a
        readable manifest."""
        doc = read_json(self.manifest_path)
        return doc.get("checkpoints") if doc else None

    def write_checkpoints(self, entries: list[dict]) -> None:
        atomic_write(self.manifest_path, json.dumps({"checkpoints": entries}, indent=1) + "\n")

    def remove_temporaries(self) -> None:
        """Delete what killed writes left behind (`.NAME.tmp<pid>`, in the folder and in ckpt/).
        Called by the process that holds the run's lock: no write of another is under way."""
        for folder in (self.path, self.ckpt_dir):
            for tmp in folder.glob(".*.tmp*"):
                tmp.unlink(missing_ok=True)

    # ---- metrics.jsonl -------------------------------------------------------------------------

    def _rows(self) -> tuple[list[tuple[int, str]], int | None] | None:
        """(step, line) of each row up to the first line that is not one, and that line's number
        (None when all are rows); None when metrics.jsonl is missing."""
        try:
            text = self.metrics_path.read_text()
        except FileNotFoundError:
            return None
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            row = _row(line)
            if row is None:
                return rows, number
            rows.append((row["step"], line))
        return rows, None

    def rows_problem(self, expected: list[int]) -> str | None:
        """Why metrics.jsonl does not begin with one row for each step of `expected` (a run's
        logged steps up to a checkpoint), or None when it does."""
        read = self._rows()
        if read is None:
            return "metrics.jsonl is missing"
        rows, bad = read
        for i, step in enumerate(expected):
            if i == len(rows):
                return (f"metrics.jsonl line {bad} is not a JSON object with a step" if bad
                        else f"metrics.jsonl ends before the row of step {step}")
            if rows[i][0] != step:
                return f"metrics.jsonl line {i + 1} is step {rows[i][0]}, where step {step} belongs"
        return None

    def truncate_metrics(self, last_step: int) -> None:
        """Keep the rows up to `last_step` (the checkpoint's; -1 for none), and nothing after."""
        rows = (self._rows() or ([], None))[0]
        kept = takewhile(lambda r: r[0] <= last_step, rows)
        atomic_write(self.metrics_path, "".join(f"{line}\n" for _, line in kept))

    def append_metrics(self, row: dict) -> None:
        data = (json.dumps(_clean(row)) + "\n").encode()
        if self._metrics is None:  # unbuffered: a row is on its way to the disk when this returns
            self._metrics = faults.writer(open(self.metrics_path, "ab", buffering=0), self.metrics_path.name)
        view = memoryview(data)
        try:
            while view:
                view = view[self._metrics.write(view):]
        except OSError as e:
            full = disk_full(self.metrics_path, len(data), e)
            if full is not None:
                raise full from None
            raise

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return _finite(obj)
