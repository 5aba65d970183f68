"""SLURM through submitit: one job, or one job-array task, per run.

    python -m runners.suite suite=tiny launcher=slurm launcher.gpus_per_node=8 launcher.tasks_per_node=8

suites/launcher/slurm.yaml lists the options and their defaults. Every task of a job runs
`runners.train.run` with torch.distributed's RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT taken
from SLURM's variables; job logs go to results/<suite>/slurm/. Across several nodes
(`launcher.nodes`) the ranks meet at the job's first node, by the name SLURM gives it.

Preemption and time limits: SLURM sends SIGTERM when it cancels, preempts or requeues a job, and
(sbatch --signal) SIGUSR2 `signal_delay_s` before the time limit. In the training loop
runners.train turns either into a checkpoint at the end of the current step and raises
Interrupted. The job then asks SLURM what is happening to it: a job still RUNNING is being ended
by nobody, so it is the time-limit warning and the job requeues itself; otherwise SLURM is
already cancelling it or putting it back in the queue. Either way it exits without a result,
and a requeued job runs the same function again, which resumes from the checkpoint.

Relaunching: each run folder records its job in slurm.json at submit time, and a relaunch
skips the runs whose job is still in the queue, so nothing is ever submitted twice. squeue
says whether a job is in the queue (every cluster has it); sacct, which needs accounting, is
asked only for the final state of a job that failed, for the report.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import submitit
import torch
import yaml
from submitit import JobEnvironment
from submitit.core.utils import JobPaths, pickle_load
from submitit.helpers import TorchDistributedEnvironment

from runners.config import ConfigError, run_id
from runners.hydra_app import SUITES_DIR
from runners.launch import LaunchFailed
from runners.run_folder import atomic_write, now, read_json
from runners.schema import validate_launcher
from runners.suite import run_folder
from runners.train import Interrupted, run

DEFAULTS = yaml.safe_load((SUITES_DIR / "launcher" / "slurm.yaml").read_text())
RECORD = "slurm.json"
ENDING = "COMPLETING"  # SLURM is ending the job: it may leave the queue or come back to it
ENDING_WAIT_S = 60


class JobsFailed(LaunchFailed):
    """Some runs ended without finishing; the message names each job and its logs."""


def launch(runs: list[dict], launcher_cfg: dict) -> None:
    if not runs:
        return
    opts = _options(launcher_cfg)
    if shutil.which("sbatch") is None:
        raise ConfigError(["launcher=slurm: sbatch is not on PATH; run the suite where SLURM's "
                           "commands are (a login node), or choose launcher=local"])
    log_dir = Path(runs[0]["results_dir"]).absolute() / runs[0]["suite"] / "slurm"
    jobs = _already_queued(runs)
    todo = [cfg for cfg in runs if run_id(cfg) not in jobs]
    if todo:
        jobs.update(_submit(todo, opts, log_dir))
    if opts["wait"]:
        _wait(runs, jobs, log_dir)


def _options(launcher_cfg: dict) -> dict:
    """The defaults of suites/launcher/slurm.yaml under the given keys, checked (runners.schema)."""
    return validate_launcher({**DEFAULTS, **launcher_cfg})


def squeue(job_ids: list[str]) -> dict[str, str]:
    """The SLURM state of each of these jobs still in the queue; finished jobs are absent.
    Ids are as submitit writes them: "123", or "123_4" for a job-array task."""
    if not job_ids:
        return {}
    out = subprocess.run(["squeue", "--noheader", "--array", "--format=%i|%T", f"--jobs={','.join(job_ids)}"],
                         capture_output=True, text=True)
    if out.returncode:
        if "Invalid job id" in out.stderr:  # squeue's answer when none of them is known any more
            return {}
        raise RuntimeError(f"squeue failed ({out.returncode}): {out.stderr.strip()}")
    states = dict(line.split("|", 1) for line in out.stdout.splitlines() if "|" in line)
    return {j: states[j] for j in job_ids if j in states}


def _already_queued(runs: list[dict]) -> dict[str, str]:
    """run_id -> job id, for the runs whose recorded job is still queued or running."""
    recorded = {run_id(cfg): rec["job_id"] for cfg in runs
                if (rec := read_json(run_folder(cfg).path / RECORD))}
    deadline = time.time() + ENDING_WAIT_S
    states = squeue(list(recorded.values()))
    while ENDING in states.values() and time.time() < deadline:
        time.sleep(1)  # a cancelled job leaves the queue, a requeued one comes back to it
        states = squeue(list(recorded.values()))
    queued = {rid: job for rid, job in recorded.items() if job in states}
    for rid, job in queued.items():
        print(f"{rid}: job {job} is {states[job]}, not submitted again", flush=True)
    return queued


def _job_paths(log_dir: Path, job_id: str) -> JobPaths:
    return JobPaths(log_dir / "%j", job_id=job_id, task_id=0)


def _submit(todo: list[dict], opts: dict, log_dir: Path) -> dict[str, str]:
    ex = submitit.AutoExecutor(folder=log_dir / "%j", cluster="slurm")
    params = {"nodes": opts["nodes"], "tasks_per_node": opts["tasks_per_node"],
              "cpus_per_task": opts["cpus_per_task"], "timeout_min": opts["timeout_min"],
              "slurm_signal_delay_s": opts["signal_delay_s"],
              "slurm_array_parallelism": opts["array_parallelism"],
              # --requeue: preemption puts the job back in the queue even where JobRequeue=0
              "slurm_additional_parameters": {"requeue": True, **opts["sbatch"]}}
    if opts["gpus_per_node"]:
        params["gpus_per_node"] = opts["gpus_per_node"]
    if opts["mem_gb"] is not None:
        params["mem_gb"] = opts["mem_gb"]
    if opts["partition"]:
        params["slurm_partition"] = opts["partition"]
    ex.update_parameters(**params)

    submitted = {}
    if opts["array"]:
        ex.update_parameters(name=todo[0]["suite"])
        with ex.batch():
            jobs = [ex.submit(_job, cfg) for cfg in todo]
        for cfg, job in zip(todo, jobs):
            submitted[run_id(cfg)] = _record(cfg, job.job_id, log_dir)
    else:
        for cfg in todo:
            ex.update_parameters(name=run_id(cfg))
            submitted[run_id(cfg)] = _record(cfg, ex.submit(_job, cfg).job_id, log_dir)
    for i, (rid, job) in enumerate(submitted.items(), 1):
        print(f"[{i}/{len(submitted)}] {rid}: job {job}, log {_job_paths(log_dir, job).stdout}", flush=True)
    return submitted


def _record(cfg: dict, job_id: str, log_dir: Path) -> str:
    """slurm.json in the run folder: the job now in charge of the run, and the earlier ones."""
    folder = run_folder(cfg).path
    folder.mkdir(parents=True, exist_ok=True)
    old = read_json(folder / RECORD) or {}
    paths = _job_paths(log_dir, job_id)
    record = {"job_id": job_id, "submitted_at": now(), "stdout": str(paths.stdout), "stderr": str(paths.stderr),
              "earlier_jobs": old.get("earlier_jobs", []) + ([old["job_id"]] if "job_id" in old else [])}
    atomic_write(folder / RECORD, json.dumps(record, indent=2) + "\n")
    return job_id


def _job(cfg: dict) -> dict:
    """What every task of a job runs: train (or resume) the run; requeue the job if interrupted."""
    # torch would use every core of the node, not the task's share (torchrun sets
    # OMP_NUM_THREADS=1 for the same reason)
    if "OMP_NUM_THREADS" not in os.environ and "SLURM_CPUS_PER_TASK" in os.environ:
        torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))
    # submitit's own handlers would requeue or fail the job in the middle of a step. Outside
    # the training loop a signal changes nothing (the run finishes, or SLURM kills it and it
    # resumes from its last checkpoint); inside it runners.train's handlers take over.
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, lambda *_: None)
    # overwrite: sbatch passes on the submitting shell's environment, which may be a torchrun's.
    # MASTER_ADDR is the job's first node by name, which every node resolves to its address.
    dist_env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    env = JobEnvironment()
    # In each task's log: where a multi-node job's ranks ran, and where they met (a job whose
    # ranks cannot reach that address hangs in its first collective)
    print(f"rank {env.global_rank} of {env.num_tasks}: node {os.environ.get('SLURMD_NODENAME')} "
          f"(node id {env.node}, hostname {socket.gethostname()}), torch.distributed rendezvous at "
          f"{dist_env.master_addr}:{dist_env.master_port}", flush=True)
    try:
        return run(cfg)
    except Interrupted as e:
        if env.global_rank == 0:
            state = squeue([env.job_id]).get(env.job_id)
            if state == "RUNNING":
                subprocess.run(["scontrol", "requeue", env.job_id], check=True, timeout=60)
                print(f"interrupted ({e}): requeued job {env.job_id}", flush=True)
            else:
                print(f"interrupted ({e}): SLURM is ending job {env.job_id} ({state})", flush=True)
        # No result file: a requeued job is not over, and the launcher learns the rest from squeue.
        # At once, past the interpreter's teardown: the checkpoint and the run's files are
        # closed, and tearing torch down takes seconds on a busy node, which delay the requeue
        # or outlast SLURM's KillWait.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(143)


def _wait(runs: list[dict], jobs: dict[str, str], log_dir: Path) -> None:
    """Block until every job has left the queue, printing progress; raise JobsFailed naming
    each run that did not finish."""
    start, last_line, last_print = time.time(), None, 0.0
    while True:
        states = squeue(list(jobs.values()))
        counts = sorted(Counter(s.lower() for s in states.values()).items())
        line = ", ".join([f"{n} {state}" for state, n in counts] + [f"{len(jobs) - len(states)} ended"])
        steps = sum(_last_step(run_folder(cfg).metrics_path) for cfg in runs)
        total = sum(cfg["budget"]["steps"] for cfg in runs)
        if line != last_line or time.time() - last_print > 60:
            print(f"slurm {time.strftime('%H:%M:%S')}: {len(jobs)} jobs: {line}; steps {steps}/{total}",
                  flush=True)
            last_line, last_print = line, time.time()
        if not states:
            break
        time.sleep(min(30.0, max(1.0, (time.time() - start) / 10)))
    failures = [_failure(cfg, jobs[run_id(cfg)], log_dir) for cfg in runs if not run_folder(cfg).is_finished()]
    if failures:
        raise JobsFailed(f"{len(failures)} of {len(runs)} runs did not finish (run the suite again to "
                         "resume them):\n" + "\n".join(failures))


def _last_step(metrics: Path) -> int:
    """The last step logged, read from the end of metrics.jsonl: a long run's is too large to read
    whole at every poll."""
    try:
        with open(metrics, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = f.read().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):  # the first may be cut by the seek, the last torn by a kill
        try:
            return json.loads(line)["step"]
        except (ValueError, KeyError):
            continue
    return 0


def _failure(cfg: dict, job_id: str, log_dir: Path) -> str:
    info = run_folder(cfg).read_info() or {}
    paths = _job_paths(log_dir, job_id)
    lines = [f"  {run_id(cfg)}: job {job_id} {_final_state(job_id)}, run {info.get('status', 'not started')} "
             f"at step {info.get('step', 0)}/{cfg['budget']['steps']}",
             f"    logs: {paths.stdout}  {paths.stderr}"]
    if paths.result_pickle.exists():
        outcome, trace = pickle_load(paths.result_pickle)
        if outcome == "error":
            lines.append(f"    error: {trace.strip().splitlines()[-1]}")
    return "\n".join(lines)


def _final_state(job_id: str) -> str:
    out = subprocess.run(["sacct", "--noheader", "--parsable2", "--allocations", "--format=State",
                          f"--jobs={job_id}"], capture_output=True, text=True)
    states = out.stdout.split("\n", 1)[0].strip() if out.returncode == 0 else ""
    return states or "(state unknown: sacct has no record)"
