"""The SLURM launcher against a real SLURM cluster (tests/slurm_cluster.py), one node per job.

A small suite goes through launcher=slurm as a job array. While it runs, one job is cancelled,
one is requeued the way preemption does it, and one gets the signal SLURM sends before a time
limit; the suite is relaunched while its jobs are queued (nothing new is submitted) and again
after the cancel, as a user would. Every run must then be completed once, with the same metrics
as the same config trained in this process.
"""

import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch

import optimizers
from runners.config import ConfigError, run_id
from runners.launch import launch
from runners.launch.slurm import RECORD, JobsFailed, squeue
from runners.run_folder import read_json
from runners.suite import resolve_all, run_folder
from runners.train import run
from tests.test_train import _metrics

pytestmark = pytest.mark.slurm
STEPS = 150  # a few seconds per run: long enough to be caught in the middle
SIGNAL_AT = 5  # the step after which a job is cancelled, requeued or warned


def _suite(small_cfg) -> tuple[list[dict], dict]:
    """Three resolved runs, as runners.suite hands them to a launcher (three optimizers when
    that many are registered, otherwise seeds make up the number), and the launcher's config:
    suites/launcher/slurm.yaml sized for this 2-core node."""
    picked = list(dict.fromkeys(["adamw", *sorted(optimizers.names())]))[:3]
    suite = small_cfg(f"budget.steps={STEPS}", "budget.eval_every=50", "launcher=slurm",
                      "launcher.cpus_per_task=1", "launcher.mem_gb=1", "launcher.timeout_min=10")
    suite.update(suite="on_slurm", optimizers=picked, seeds=-(-3 // len(picked)))
    return resolve_all(suite)[:3], suite["launcher"]


def _job(cfg: dict) -> str:
    return read_json(run_folder(cfg).path / RECORD)["job_id"]


def _poll(what: str, check, timeout: float = 90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _at_step(cfg: dict, step: int) -> None:
    def reached():
        rows = run_folder(cfg).metrics_path
        return rows.exists() and any(f'"step": {step},' in line for line in rows.read_text().splitlines())

    _poll(f"{run_id(cfg)} to reach step {step}", reached)


def _slurm(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def _back_in_queue_then_release(cfg: dict) -> None:
    """A requeued job waits 120 s before it may start again (Reason=BeginTime): start it in 2 s.
    Not at once: slurmd revoked the job's credential when it was requeued, and a restart in the
    same second fails ("Job credential revoked")."""
    job = _job(cfg)
    _poll(f"job {job} to be back in the queue", lambda: squeue([job]).get(job) == "PENDING")
    info = run_folder(cfg).read_info()
    assert info["status"] == "interrupted" and info["step"] >= SIGNAL_AT, info  # it checkpointed first
    _slurm("scontrol", "update", f"JobId={job}", "StartTime=now+2")


def _run_here(cfg: dict, tmp_path) -> Path:
    """The run trained in this process, on one thread as the jobs (--cpus-per-task=1); its folder."""
    local = {**cfg, "results_dir": str(tmp_path / "local")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run(local)["env"]["world_size"] == 1
    finally:
        torch.set_num_threads(threads)
    return run_folder(local).path


def _restarts(job: str) -> int:
    return int(_slurm("scontrol", "show", "job", job).split("Restarts=")[1].split()[0])


def test_suite_survives_cancel_preemption_and_time_limit(slurm_cluster, small_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the jobs take their thread count from SLURM
    runs, launcher = _suite(small_cfg)
    cancelled, preempted, warned = runs

    outcome = {}

    def first_launch():  # blocks until every job has left the queue, as a user's terminal would
        try:
            launch(runs, {**launcher, "array": True, "array_parallelism": 2})
        except Exception as e:
            outcome["error"] = e

    waiter = threading.Thread(target=first_launch, daemon=True)
    waiter.start()
    _poll("the array to be submitted", lambda: all((run_folder(c).path / RECORD).exists() for c in runs))
    jobs = {run_id(c): _job(c) for c in runs}
    assert len(set(jobs.values())) == 3 and all("_" in j for j in jobs.values())  # array tasks

    # Relaunched while queued or running: nothing is submitted again.
    launch(runs, {**launcher, "wait": False})
    assert {run_id(c): _job(c) for c in runs} == jobs
    assert sorted(_slurm("squeue", "--noheader", "--array", "--format=%i").split()) == sorted(jobs.values())
    assert all(read_json(run_folder(c).path / RECORD)["earlier_jobs"] == [] for c in runs)

    _at_step(cancelled, SIGNAL_AT)
    _slurm("scancel", _job(cancelled))
    _at_step(preempted, SIGNAL_AT)
    _slurm("scontrol", "requeue", _job(preempted))  # what SLURM does to a preempted job
    _back_in_queue_then_release(preempted)
    _at_step(warned, SIGNAL_AT)
    _slurm("scancel", "--signal=USR2", _job(warned))  # the warning sbatch --signal sends before a time limit
    _back_in_queue_then_release(warned)  # the job requeued itself

    waiter.join(timeout=240)
    assert not waiter.is_alive()
    error = outcome.get("error")
    assert isinstance(error, JobsFailed), error
    report = str(error)
    assert "1 of 3 runs did not finish" in report and run_id(cancelled) in report
    assert f"job {jobs[run_id(cancelled)]} CANCELLED" in report and "_log.out" in report
    info = run_folder(cancelled).read_info()
    assert info["status"] == "interrupted" and info["step"] >= SIGNAL_AT  # it checkpointed on SIGTERM
    assert _restarts(jobs[run_id(preempted)]) == 1 and _restarts(jobs[run_id(warned)]) == 1

    # The user runs the suite again: only the cancelled run is submitted, as a plain job this time.
    todo = [c for c in runs if not run_folder(c).is_finished()]
    assert todo == [cancelled]
    launch(todo, launcher)
    record = read_json(run_folder(cancelled).path / RECORD)
    assert record["earlier_jobs"] == [jobs[run_id(cancelled)]] and "_" not in record["job_id"]

    sbatch = list((tmp_path / "results" / "on_slurm" / "slurm").rglob("*_submission.sh"))
    assert sbatch and all("--signal=USR2@120" in s.read_text() and "--requeue" in s.read_text() for s in sbatch)

    # Each run trained once to the end, exactly as it trains in one go here.
    for cfg in runs:
        info = run_folder(cfg).read_info()
        assert info["status"] == "completed" and info["step"] == STEPS
        got = _metrics(run_folder(cfg).path)
        assert [r["step"] for r in got] == list(range(STEPS + 1))
        assert got == _metrics(_run_here(cfg, tmp_path)), run_id(cfg)


def test_launcher_options_are_checked_before_anything_is_submitted(small_cfg):
    runs, launcher = _suite(small_cfg)
    with pytest.raises(ConfigError, match="unknown key launcher.gpus: launcher has nodes"):
        launch(runs, {**launcher, "gpus": 1})
    with pytest.raises(ConfigError) as bad:
        launch(runs, {**launcher, "mem_gb": -1, "signal_delay_s": -5, "nodes": 0})
    assert sorted(line.split("=")[0] for line in bad.value.errors) == [
        "launcher.mem_gb", "launcher.nodes", "launcher.signal_delay_s"]
    assert not any((run_folder(c).path / RECORD).exists() for c in runs)


def test_the_tasks_of_a_job_make_one_distributed_run(slurm_cluster, small_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    suite = small_cfg("budget.steps=20", "launcher=slurm", "launcher.tasks_per_node=2",
                      "launcher.cpus_per_task=1", "launcher.mem_gb=1", "launcher.timeout_min=10")
    suite["suite"] = "two_tasks"
    (cfg,) = resolve_all(suite)
    launch([cfg], suite["launcher"])
    info = run_folder(cfg).read_info()
    assert info["status"] == "completed" and info["env"]["world_size"] == 2
    # Two ranks of 4 sequences each see the batch of 8 that one process sees: the same run up
    # to the order of floating-point sums.
    got, want = _metrics(run_folder(cfg).path), _metrics(_run_here(cfg, tmp_path))
    assert [sorted(r) for r in got] == [sorted(r) for r in want]
    for a, b in zip(got, want):
        assert a == pytest.approx(b, rel=1e-4), a["step"]
