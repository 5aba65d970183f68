"""One FSDP2 run across the two nodes of the SLURM test cluster (tests/slurm_cluster.py).

Each node is a slurmd in network namespaces of its own, so the run's two ranks (gloo, one task
per node) meet at the first node's address over the cluster's network, as on two machines. The
job is preempted (requeued) after a few steps and resumes from its sharded checkpoint; every
loss it logs, before the preemption and after, must be the one process's.
"""

import re
from pathlib import Path

import pytest

from runners.launch import launch
from runners.launch.slurm import squeue
from runners.suite import resolve_all, run_folder
from tests.test_slurm import (SIGNAL_AT, _at_step, _back_in_queue_then_release, _job, _poll, _restarts, _run_here,
                              _slurm)
from tests.test_torchrun import TOLERANCE
from tests.test_train import _metrics

pytestmark = pytest.mark.slurm
STEPS = 40  # a few seconds: long enough to be preempted in the middle
# the line runners.launch.slurm writes to each task's log at every start of the job
RANK_LINE = re.compile(r"^rank (\d) of 2: node (\S+) \(node id (\d), hostname (\S+)\), "
                       r"torch.distributed rendezvous at ([^:]+):\d+$", re.M)


@pytest.fixture
def two_nodes(slurm_cluster) -> list[str]:
    if len(slurm_cluster.nodes) < 2:
        pytest.skip(f"the SLURM test cluster has one node: {slurm_cluster.single_node_reason}")
    return slurm_cluster.nodes


def _fsdp_run(small_cfg) -> tuple[dict, dict]:
    """The run, resolved for two ranks, and the launcher's config: one task on each of 2 nodes."""
    suite = small_cfg(f"budget.steps={STEPS}", "budget.eval_every=10", "train.parallel=fsdp", "launcher=slurm",
                      "launcher.nodes=2", "launcher.tasks_per_node=1", "launcher.cpus_per_task=1",
                      "launcher.mem_gb=1", "launcher.timeout_min=10")
    suite["suite"] = "two_nodes"
    (cfg,) = resolve_all(suite)
    return cfg, suite["launcher"]


def _losses(folder: Path) -> list[tuple]:
    return [(r["step"], r.get("train_loss"), r.get("val_loss")) for r in _metrics(folder)]


def _ranks(cfg: dict) -> list[tuple]:
    """(rank, SLURM node, node id, hostname, rendezvous host) of each task at each start."""
    job = _job(cfg)
    logs = Path(cfg["results_dir"]) / cfg["suite"] / "slurm" / job
    return sorted((int(rank), node, int(node_id), host, master)
                  for task in (0, 1) for rank, node, node_id, host, master
                  in RANK_LINE.findall((logs / f"{job}_{task}_log.out").read_text()))


def test_an_fsdp2_run_across_two_nodes_survives_preemption_with_the_losses_of_one_process(
        two_nodes, small_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the jobs take their thread count from SLURM
    cfg, launcher = _fsdp_run(small_cfg)
    launch([cfg], {**launcher, "wait": False})
    _at_step(cfg, SIGNAL_AT)
    _slurm("scontrol", "requeue", _job(cfg))  # what SLURM does to a preempted job
    _back_in_queue_then_release(cfg)
    (ckpt, *_) = run_folder(cfg).checkpoints()
    assert ckpt["dir"].startswith("dcp-") and sum(f.endswith(".distcp") for f in ckpt["files"]) == 2, ckpt
    # the rows up to the checkpoint, timings and all: a restart from step 0 would write them anew
    kept = run_folder(cfg).metrics_path.read_text().splitlines()[:ckpt["step"] + 1]
    want = _losses(_run_here(cfg, tmp_path))  # while the job runs
    _poll("the job to leave the queue", lambda: not squeue([_job(cfg)]), timeout=180)

    first, second = two_nodes[:2]  # each rank on a node of its own, meeting at the first one
    assert _ranks(cfg) == sorted([(0, first, 0, first, first), (1, second, 1, second, first)] * 2)  # 2 starts
    info = run_folder(cfg).read_info()
    assert info["status"] == "completed" and info["step"] == STEPS and info["env"]["world_size"] == 2, info
    assert _restarts(_job(cfg)) == 1
    assert run_folder(cfg).metrics_path.read_text().splitlines()[:len(kept)] == kept  # it resumed
    got = _losses(run_folder(cfg).path)
    assert [g[0] for g in got] == [w[0] for w in want] == list(range(STEPS + 1))
    for (step, *losses), (_, *expected) in zip(got, want):
        where = "before" if step <= ckpt["step"] else "after"
        for a, b in zip(losses, expected):
            assert (a is None) == (b is None) and (a is None or abs(a - b) <= TOLERANCE * abs(b)), \
                f"step {step} ({where} the preemption at step {ckpt['step']}): {a} on two nodes, {b} in one process"
