"""A real two-node SLURM cluster with accounting on this one machine, for the tests marked `slurm`.

tests/conftest.py imports the fixture, so that every test module shares the one cluster (a
module importing it itself would start a second cluster on the same ports). A job asks for
one node unless it says otherwise (launcher.nodes), so the single-node tests run on it as they
would on one node; tests/test_slurm_two_nodes.py runs one job across both.

The session fixture installs the Debian packages when they are missing (CI starts from a clean
machine), starts munged, MariaDB, slurmdbd, slurmctld and two slurmd, each in network
namespaces of its own, under a temp folder through tests/slurm/start.sh, points this process
at the cluster (SLURM_CONF, which sbatch, squeue and sacct read), and at the end cancels what
is left in the queue, stops every daemon by its PID and removes the namespaces and links.
Where network namespaces cannot be made, the cluster has one node (and says why).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent / "slurm"
PACKAGES = ("slurm-wlm", "munge", "slurmdbd", "mariadb-server", "iproute2")
COMMANDS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sbatch", "sacct", "ip")
NO_NAMESPACES = 3  # start.sh's exit status when it cannot make the nodes' namespaces
PORTS = (16817, 16818, 16819, 13306)  # fixed in start.sh


def _install() -> None:
    if all(shutil.which(d) for d in COMMANDS):
        return
    if os.geteuid() != 0:
        pytest.fail("SLURM is not installed and installing it needs root: "
                    f"apt-get install -y {' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", *PACKAGES]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            pytest.fail(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-1000:]}")
    missing = [d for d in COMMANDS if not shutil.which(d)]
    if missing:
        pytest.fail(f"apt-get installed {' '.join(PACKAGES)} but {', '.join(missing)} is still missing")


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _logs(root: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                     for p in sorted((root / "log").glob("*")) if p.is_file())


def _drain_queue() -> None:
    """Cancel the jobs still queued or running: slurmd going away would orphan their processes."""
    ids = subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        left = subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True)
        if left.returncode or not left.stdout.strip():
            return
        time.sleep(0.5)


@dataclass(frozen=True)
class Cluster:
    env: dict  # points SLURM's clients at the cluster: {"SLURM_CONF": ...}
    nodes: list[str]
    single_node_reason: str | None  # why the cluster has one node; None when it has two


def _start(root: Path) -> str | None:
    """Start the cluster under root, with two nodes if it can; None, or why it has one node."""
    def start(nodes: int) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", SCRIPTS / "start.sh", root, str(nodes)], capture_output=True, text=True,
                              timeout=180)

    started, why = start(2), None
    if started.returncode == NO_NAMESPACES:
        why = (started.stderr.strip().splitlines() or ["tests/slurm/network.sh failed"])[-1]
        subprocess.run(["bash", SCRIPTS / "stop.sh", root], capture_output=True, timeout=120)
        started = start(1)
    if started.returncode:
        pytest.fail(f"tests/slurm/start.sh failed: {started.stderr.strip()}\n{_logs(root)}")
    return why


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """Yields the Cluster; this process's os.environ has its env for as long as it runs."""
    _install()
    busy = [p for p in PORTS if _port_in_use(p)]
    if busy:
        pytest.fail(f"ports {busy} are taken: is another test cluster running? (tests/slurm/stop.sh ROOT)")
    root = tmp_path_factory.mktemp("slurm")
    env = {"SLURM_CONF": str(root / "slurm.conf")}
    before = os.environ.get("SLURM_CONF")
    try:
        why = _start(root)
        os.environ.update(env)
        nodes = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%N"], check=True, capture_output=True,
                               text=True).stdout.split()
        yield Cluster(env, nodes, why)
    finally:
        if os.environ.get("SLURM_CONF") == env["SLURM_CONF"]:
            _drain_queue()
        subprocess.run(["bash", SCRIPTS / "stop.sh", root], capture_output=True, timeout=120)
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
