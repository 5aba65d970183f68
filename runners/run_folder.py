"""A run is a folder: results/<suite>/<run_id>/{config.yaml, run.json, metrics.jsonl, ckpt/}.

Every file but metrics.jsonl is replaced atomically (temp file + rename), so a job killed at
any instant leaves the previous version, never a torn one. metrics.jsonl is append-only; on
resume it is cut back to the checkpoint's step (and any torn last line dropped), so a resumed
run continues it with no duplicated rows.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import socket
import subprocess
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import yaml

SCHEMA_VERSION = 1
FINISHED = ("completed", "diverged", "pruned")
PACKAGES = ("torch", "numpy", "optarena", "hydra-core", "optuna", "pandas", "submitit", "wandb")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def atomic_file(path: Path):
    """A binary file that appears at `path`, whole, only when the block ends without an error;
    until then (and after a kill) `path` keeps its previous content."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, data: str | bytes) -> None:
    with atomic_file(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)


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
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.ckpt_dir = self.path / "ckpt"
        self.metrics_path = self.path / "metrics.jsonl"
        self._metrics = None

    def status(self) -> str | None:
        """None for a run never started; otherwise run.json's status."""
        info = read_json(self.path / "run.json")
        return info.get("status") if info else None

    def is_finished(self) -> bool:
        return self.status() in FINISHED

    def create(self, config: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir.mkdir(exist_ok=True)
        atomic_write(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def write_info(self, info: dict) -> None:
        info = {"schema_version": SCHEMA_VERSION, **info, "updated_at": now()}
        atomic_write(self.path / "run.json", json.dumps(_clean(info), indent=2) + "\n")

    def read_info(self) -> dict | None:
        return read_json(self.path / "run.json")

    def truncate_metrics(self, last_step: int) -> None:
        """Keep the rows up to `last_step` (the checkpoint's), dropping a torn last line."""
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            if row["step"] > last_step:
                break
            kept.append(line)
        atomic_write(self.metrics_path, "".join(f"{line}\n" for line in kept))

    def append_metrics(self, row: dict) -> None:
        if self._metrics is None:
            self._metrics = open(self.metrics_path, "a")
        self._metrics.write(json.dumps(_clean(row)) + "\n")
        self._metrics.flush()

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
