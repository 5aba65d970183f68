"""Faults a run must survive, with real processes: SIGKILL at exact points (runners/faults.py),
two suites on one folder, damaged checkpoints, run.json and metrics.jsonl, a full disk (a real
tmpfs), and data or train.* keys changed under a resume. Each test checks what the user gets (the
exact message, or the exact recovery) and that no metrics row is lost or doubled: a recovered run
ends with the same rows and weights as one that ran in one go.

A test run: SMALL_RUN (30 steps, an evaluation every 10) with a checkpoint every 5 steps.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from runners import lock
from runners.config import ConfigError
from runners.hydra_app import compose_config
from runners.launch import LaunchFailed
from runners.run_folder import DiskFull, RunFolder
from runners.status import run_state
from runners.suite import resolve_all, run_folder, run_status, run_suite
from runners.train import Interrupted, run
from tests.conftest import REPO, SMALL_RUN, TINY

ARGS = [*SMALL_RUN, "train.ckpt_every=5"]
TIMING = {"time_fwd_bwd_s", "time_opt_s", "tokens_per_s", "wall_time_s", "peak_mem_bytes"}
# Where a process is killed (OPTARENA_FAULT), and the warning its resume gives (None: none, it
# resumes from its newest checkpoint). Renames in the checkpoint of step 10: the manifest's
# (its 2nd), state.pt -> previous.pt, the new file -> state.pt (its 2nd); the final checkpoint
# (step 30) lists itself twice, as unfinished (6th) then final (7th); run.json's 1st rename is the
# run's start, its 2nd the run's end.
LOST_10 = "the checkpoint at step 10 is missing or damaged (no file in ckpt/ has its {size:,} bytes and CRC-32); resuming from the checkpoint at step 5"
KILL_POINTS = {
    "write:metrics.jsonl@15": None,  # halfway through the row of step 13 (write 1 empties the file)
    "write:state.pt@2": None,  # inside the checkpoint of step 5
    "before-rename:manifest.json@2": None,
    "after-rename:manifest.json@2": LOST_10,
    "after-rename:previous.pt": LOST_10,
    "after-rename:state.pt@2": None,
    "before-rename:manifest.json@7": None,  # the final checkpoint in place, not yet listed as final
    "after-rename:run.json@1": None,  # before the first evaluation
    "before-rename:run.json@2": "run.json did not say how the run ended: rebuilt from config.yaml and the final checkpoint",
}


def _cfg(results: Path, *extra: str) -> dict:
    return compose_config([*ARGS, f"results_dir={results}", *extra])


def _folder(results: Path, *extra: str) -> Path:
    return run_folder(resolve_all(_cfg(results, *extra))[0]).path


def _rows(folder: Path) -> list[dict]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def _weights(folder: Path) -> dict:
    return torch.load(folder / "ckpt" / "state.pt", weights_only=False)["model"]


def _info(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


def _warnings(captured: str) -> list[str]:
    return [line for line in captured.splitlines() if line.startswith("warning:")]


def _process(results: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runners.train", *ARGS, f"results_dir={results}", *extra],
                            cwd=REPO, env={**os.environ, **(env or {})}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, shakespeare_bytes):
    """The run in one go: the rows and weights every recovery must end with."""
    results = tmp_path_factory.mktemp("straight")
    run(_cfg(results))
    folder = _folder(results)
    return _rows(folder), _weights(folder)


@pytest.fixture(scope="module")
def killed(tmp_path_factory, shakespeare_bytes):
    """One process per kill point, all at once: point -> (exit status, its results folder)."""
    base = tmp_path_factory.mktemp("killed")
    procs = {point: _process(base / str(i), env={"OPTARENA_FAULT": point}) for i, point in enumerate(KILL_POINTS)}
    return {point: (p.wait(timeout=300), base / str(i)) for i, (point, p) in enumerate(procs.items())}


def _copy_killed(killed, tmp_path: Path, point: str = "write:metrics.jsonl@15") -> Path:
    """A copy of the results of a killed run; by default the one killed in the middle of the row
    of step 13: checkpoints at steps 10 (state.pt) and 5 (previous.pt), rows 0-12 and half of 13."""
    results = tmp_path / "results"
    shutil.copytree(killed[point][1], results)
    return results


def _assert_recovered(results: Path, straight) -> None:
    folder = _folder(results)
    assert _info(folder)["status"] == "completed"
    rows, weights = straight
    assert _rows(folder) == rows  # no row lost, none doubled
    got = _weights(folder)
    assert all(torch.equal(got[k], weights[k]) for k in weights)
    assert sorted(p.name for p in (folder / "ckpt").iterdir()) == ["manifest.json", "state.pt"]
    assert not list(folder.rglob(".*.tmp*"))


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_kill_at_any_point_resumes_exactly(killed, straight, tmp_path, point, capsys):
    assert killed[point][0] == -signal.SIGKILL, f"not killed at {point}"
    results = _copy_killed(killed, tmp_path, point)
    folder = _folder(results)
    size = (json.loads((folder / "ckpt" / "manifest.json").read_text())["checkpoints"][0]["size"]
            if (folder / "ckpt" / "manifest.json").exists() else 0)
    run(_cfg(results))
    want = KILL_POINTS[point]
    assert _warnings(capsys.readouterr().err) == ([f"warning: {folder.name}: {want.format(size=size)}"] if want else [])
    _assert_recovered(results, straight)


@pytest.mark.parametrize("damage", ["truncate", "random", "empty", "both"])
def test_a_damaged_checkpoint_falls_back_to_the_one_before(killed, straight, tmp_path, damage, capsys):
    results = _copy_killed(killed, tmp_path)
    folder = _folder(results)
    ckpt = folder / "ckpt"
    sizes = [e["size"] for e in json.loads((ckpt / "manifest.json").read_text())["checkpoints"]]
    state = ckpt / "state.pt"
    if damage == "truncate":
        os.truncate(state, 5000)
    elif damage == "random":
        state.write_bytes(np.random.default_rng(0).bytes(state.stat().st_size))
    else:
        state.write_bytes(b"")
    if damage == "both":
        os.truncate(ckpt / "previous.pt", 100)
    run(_cfg(results))
    lost = f"no file in ckpt/ has its {sizes[0]:,} bytes and CRC-32"
    want = (f"the checkpoint at step 10 is missing or damaged ({lost}); the checkpoint at step 5 is missing or "
            f"damaged (no file in ckpt/ has its {sizes[1]:,} bytes and CRC-32); starting again from step 0"
            if damage == "both" else f"the checkpoint at step 10 is missing or damaged ({lost}); resuming "
            "from the checkpoint at step 5")
    assert _warnings(capsys.readouterr().err) == [f"warning: {folder.name}: {want}"]
    assert _info(folder)["warnings"] == [{"step": 0 if damage == "both" else 5, "warning": want}]
    _assert_recovered(results, straight)


def test_a_lost_manifest_loads_the_checkpoints_unverified(killed, straight, tmp_path, capsys):
    results = _copy_killed(killed, tmp_path)
    folder = _folder(results)
    (folder / "ckpt" / "manifest.json").unlink()
    run(_cfg(results))
    assert _warnings(capsys.readouterr().err) == [
        f"warning: {folder.name}: ckpt/manifest.json is missing: its checkpoints are trusted as they load, "
        "without a checksum; resuming from the checkpoint at step 10"]
    _assert_recovered(results, straight)


BAD_ROWS = {  # what is done to metrics.jsonl -> the warning of the resume
    "garbage at step 7": (lambda lines: lines[:7] + ["garbage"] + lines[8:],
                          "metrics.jsonl line 8 is not a JSON object with a step: the rows of the checkpoint "
                          "at step 10 are not all there; resuming from the checkpoint at step 5"),
    "a list at step 7": (lambda lines: lines[:7] + ["[1, 2]"] + lines[8:],
                         "metrics.jsonl line 8 is not a JSON object with a step: the rows of the checkpoint "
                         "at step 10 are not all there; resuming from the checkpoint at step 5"),
    "no row for step 7": (lambda lines: lines[:7] + lines[8:],
                          "metrics.jsonl line 8 is step 8, where step 7 belongs: the rows of the checkpoint at "
                          "step 10 are not all there; resuming from the checkpoint at step 5"),
    "garbage at step 2": (lambda lines: lines[:2] + ["{"] + lines[3:],
                          "metrics.jsonl line 3 is not a JSON object with a step: the rows of the checkpoints at "
                          "steps 10, 5 are not all there; starting again from step 0"),
    "deleted": (None, "metrics.jsonl is missing: the rows of the checkpoints at steps 10, 5 are not all there; "
                      "starting again from step 0"),
}


@pytest.mark.parametrize("damage", BAD_ROWS)
def test_damaged_rows_resume_from_the_last_checkpoint_whose_rows_are_intact(killed, straight, tmp_path,
                                                                             damage, capsys):
    results = _copy_killed(killed, tmp_path)
    folder = _folder(results)
    edit, want = BAD_ROWS[damage]
    metrics = folder / "metrics.jsonl"
    if edit is None:
        metrics.unlink()
    else:
        metrics.write_text("\n".join(edit(metrics.read_text().splitlines())) + "\n")
    run(_cfg(results))
    assert _warnings(capsys.readouterr().err) == [f"warning: {folder.name}: {want}"]
    _assert_recovered(results, straight)


@pytest.mark.parametrize("damage", ["torn", "deleted"])
def test_a_torn_run_json_is_seen_and_rebuilt(killed, straight, tmp_path, damage, capsys):
    results = _copy_killed(killed, tmp_path)
    folder = _folder(results)
    info_file = folder / "run.json"
    if damage == "torn":
        info_file.write_text(info_file.read_text()[:200])
    else:
        info_file.unlink()
    cfg = resolve_all(_cfg(results))[0]
    assert run_status(cfg) == "resumable"  # the plan's column
    state = run_state(cfg, "cpu", 1)  # make status's row
    assert (state["status"], state["step"], state["total"]) == ("interrupted", 12, 30)
    run(_cfg(results))
    assert _warnings(capsys.readouterr().err) == [
        f"warning: {folder.name}: run.json was unreadable: rebuilt from config.yaml and the checkpoint at step 10"]
    _assert_recovered(results, straight)


def test_a_finished_run_with_a_torn_run_json_stays_finished(straight, tmp_path, capsys):
    results = tmp_path / "results"
    run(_cfg(results, "budget.steps=10"))
    folder = _folder(results, "budget.steps=10")
    whole = _info(folder)
    stamps = {p.name: p.stat().st_mtime_ns for p in (folder / "metrics.jsonl", folder / "ckpt" / "state.pt")}
    (folder / "run.json").write_text("{")
    cfg = resolve_all(_cfg(results, "budget.steps=10"))[0]
    assert run_status(cfg) == "finished" and run_state(cfg, "cpu", 1)["status"] == "completed"
    info = run(_cfg(results, "budget.steps=10"))  # rebuilds run.json; trains nothing
    assert _warnings(capsys.readouterr().err) == [
        f"warning: {folder.name}: run.json did not say how the run ended: rebuilt from config.yaml and the "
        "final checkpoint"]
    assert info["status"] == _info(folder)["status"] == "completed"
    assert _info(folder)["summary"] == whole["summary"] and _info(folder)["step"] == 10
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "metrics.jsonl", folder / "ckpt" / "state.pt")} == stamps


def test_temporary_files_of_a_run_are_removed_at_its_next_start(killed, straight, tmp_path):
    results = _copy_killed(killed, tmp_path)
    folder = _folder(results)
    for leftover in (".run.json.tmp99", ".metrics.jsonl.tmp98", ".config.yaml.tmp97", "ckpt/.state.pt.tmp96"):
        (folder / leftover).write_bytes(b"x" * 1000)
    run(_cfg(results))
    _assert_recovered(results, straight)  # which checks that no temporary file is left


def _interrupt_at(step: int):
    """on_eval that sends this process SIGTERM at `step`: the run checkpoints there and stops."""
    return lambda at, tokens, loss: os.kill(os.getpid(), signal.SIGTERM) if at == step else False


def _interrupted(results: Path, *extra: str, step: int = 10) -> Path:
    with pytest.raises(Interrupted):
        run(_cfg(results, *extra), on_eval=_interrupt_at(step))
    return _folder(results, *extra)


def test_a_resume_on_changed_data_is_refused(tmp_path, shakespeare_bytes):
    data = tmp_path / "data"
    shutil.copytree(shakespeare_bytes, data)
    results = tmp_path / "results"
    folder = _interrupted(results, f"data.path={data}")
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name != lock.LOCK_FILE}
    fingerprint = _info(folder)["data_fingerprint"]
    tokens = np.fromfile(data / "train.bin", dtype=np.uint16)
    tokens[:1000] = tokens[1000:2000]  # re-tokenized, say: same size, other tokens
    tokens.tofile(data / "train.bin")
    with pytest.raises(ConfigError) as refused:
        run(_cfg(results, f"data.path={data}"))
    from runners.data import file_fingerprint

    now = file_fingerprint(data / "train.bin")
    assert refused.value.errors == [
        f"data: train.bin changed since {folder.name} started (train.bin was {fingerprint['train.bin']['size']:,} "
        f"bytes, sample sha256 {fingerprint['train.bin']['sha256'][:12]}, is {now['size']:,} bytes, sample "
        f"sha256 {now['sha256'][:12]}): its checkpoint at step 10 was trained on the old data; restore it, "
        "or move the run folder away to start over"]
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name != lock.LOCK_FILE} == before


def test_train_keys_changed_under_a_resume_are_recorded_or_refused(tmp_path, straight):
    results = tmp_path / "results"
    folder = _interrupted(results)
    # log_every changes the rows, not the numbers: recorded with the step it took effect
    _interrupted(results, "train.log_every=5", step=20)
    run(_cfg(results, "train.log_every=5"))  # a second resume checks the rows against both densities
    info = _info(folder)
    assert info["status"] == "completed" and "warnings" not in info
    assert info["drift"] == [{"step": 10, "key": "train.log_every", "from": 1, "to": 5, "alters_numbers": False}]
    assert info["config"]["train"]["log_every"] == 5
    assert "log_every: 5" in (folder / "config.yaml").read_text()
    rows, _ = straight
    assert _rows(folder) == [r for r in rows if r["step"] <= 10 or r["step"] % 5 == 0]

    other = tmp_path / "other"
    folder = _interrupted(other)
    before = (folder / "run.json").stat().st_mtime_ns
    refused = subprocess.run([sys.executable, "-m", "runners.train", *ARGS, f"results_dir={other}",
                              "train.micro_batch=4"], cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        f"error: train.micro_batch=4: {folder.name} ran with null up to its checkpoint at step 10, and this "
        "changes its numbers: set it back, or add train.allow_drift=true to resume with it anyway "
        "(recorded in run.json)"]
    assert (folder / "run.json").stat().st_mtime_ns == before
    run(_cfg(other, "train.micro_batch=4", "train.allow_drift=true"))
    info = _info(folder)
    assert info["drift"] == [
        {"step": 10, "key": "train.allow_drift", "from": False, "to": True, "alters_numbers": False},
        {"step": 10, "key": "train.micro_batch", "from": None, "to": 4, "alters_numbers": True}]
    assert info["config"]["train"]["micro_batch"] == 4 and info["status"] == "completed"


def test_a_run_held_by_another_process_is_refused_naming_it(tmp_path, shakespeare_bytes):
    results = tmp_path / "results"
    folder = _folder(results)
    with lock.hold(folder):
        since = json.loads((folder / lock.LOCK_FILE).read_text())["since"]
        second = subprocess.run([sys.executable, "-m", "runners.train", *ARGS, f"results_dir={results}"],
                                cwd=REPO, capture_output=True, text=True)
    assert second.returncode == 1
    assert second.stderr.splitlines() == [
        f"error: {folder.name} is being run by host {socket.gethostname()} pid {os.getpid()} (since {since})"]
    assert sorted(p.name for p in folder.iterdir()) == [lock.LOCK_FILE]  # it wrote nothing


def test_two_suites_on_one_folder_run_each_run_once(tmp_path, shakespeare_bytes):
    results = tmp_path / "results"
    args = [sys.executable, "-m", "runners.suite", *TINY, "only=[adamw,sm3]", "seeds=1", *SMALL_RUN,
            "budget.steps=400", "report=false", f"results_dir={results}"]
    first = subprocess.Popen(args, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    adamw, sm3 = (run_folder(c).path for c in resolve_all(compose_config([*args[3:]])))
    deadline = time.time() + 120
    while not ((adamw / "metrics.jsonl").exists() and (adamw / "metrics.jsonl").read_text()):
        assert time.time() < deadline and first.poll() is None, "the first suite never started its first run"
        time.sleep(0.02)
    second = subprocess.Popen(args, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out1, out2 = first.communicate(timeout=300)[0], second.communicate(timeout=300)[0]
    assert first.returncode == second.returncode == 0, out1 + out2
    host = socket.gethostname()
    assert f"skipped: {adamw.name} is being run by host {host} pid {first.pid} (since " in out2
    for folder in (adamw, sm3):
        assert [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == \
            list(range(401))
        assert _info(folder)["status"] == "completed"


def _workers(pid: int) -> list[int]:
    """The pool's worker processes among `pid`'s children (not multiprocessing's resource tracker)."""
    children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("to", ["the suite alone", "its process group"])
def test_a_stopped_suite_stops_its_workers_and_starts_no_other_run(tmp_path, shakespeare_bytes, to):
    """SIGTERM (kill PID, scancel, a preemption) stops a suite of worker processes: the runs in
    flight checkpoint and say `interrupted`, no queued run starts, and no worker is left behind."""
    results = tmp_path / "results"
    args = [*TINY, "only=[adamw,sm3]", "seeds=2", "workers=2", *SMALL_RUN, "budget.steps=2000",
            "report=false", f"results_dir={results}"]
    suite = subprocess.Popen([sys.executable, "-m", "runners.suite", *args], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    folders = [run_folder(c).path for c in resolve_all(compose_config(args))]
    deadline = time.time() + 120
    while sum((f / "metrics.jsonl").exists() and bool((f / "metrics.jsonl").read_text()) for f in folders) < 2:
        assert time.time() < deadline and suite.poll() is None, "the suite never started two runs"
        time.sleep(0.05)
    workers = _workers(suite.pid)
    assert len(workers) == 2
    os.kill(suite.pid, signal.SIGTERM) if to == "the suite alone" else os.killpg(suite.pid, signal.SIGTERM)
    out = suite.communicate(timeout=120)[0]
    assert suite.returncode == 143, out
    assert not [w for w in workers if _alive(w)], out
    started = [f for f in folders if f.exists()]
    assert len(started) == 2, out  # the two that were running; the queued two never began
    assert all(_info(f)["status"] == "interrupted" for f in started), out


def test_a_suite_goes_on_past_a_failed_run_and_a_failed_report_fails_it(tmp_path, shakespeare_bytes, capsys):
    results = tmp_path / "results"
    args = [*TINY, "only=[adamw,sm3]", "seeds=1", *SMALL_RUN, "budget.steps=10", f"results_dir={results}"]
    adamw, sm3 = (run_folder(c).path for c in resolve_all(compose_config(args)))
    adamw.mkdir(parents=True)
    (adamw / "ckpt").write_text("not a folder")  # adamw cannot run
    with pytest.raises(LaunchFailed) as failed:
        run_suite([*args, "report=false"])
    error = _info(adamw)["error"]
    assert _info(adamw)["status"] == "failed" and error.startswith("FileExistsError: ")
    assert str(failed.value) == (f"1 of 2 runs did not finish (run the suite again to retry them):\n"
                                 f"  {adamw.name}: {error}")
    assert _info(sm3)["status"] == "completed"  # the suite went on

    (adamw / "ckpt").unlink()
    shutil.copytree(sm3, sm3.with_name("copy-of-sm3"))  # the report refuses a run_id in two folders
    capsys.readouterr()
    with pytest.raises(LaunchFailed, match=r"^the report could not be written \(the error above says why\)$"):
        run_suite(args)
    assert _info(adamw)["status"] == "completed"
    assert f"run {sm3.name} is in two folders, copy-of-sm3 and {sm3.name}: keep one" in capsys.readouterr().err


@pytest.fixture
def tmpfs(tmp_path):
    """A real tmpfs of 2 MiB (room for one of the test run's 1.5 MB checkpoints, not two)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "tmpfs"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield where
    if subprocess.run(["umount", str(where)]).returncode:
        subprocess.run(["umount", "-l", str(where)], check=True)  # a file still open: detach it anyway


def test_a_full_disk_is_one_line_and_run_json_says_so(tmpfs, straight):
    results = tmpfs / "results"
    full = _process(results)
    out, err = full.communicate(timeout=300)
    folder = _folder(results)
    assert full.returncode == 1, out + err
    line = err.splitlines()[-1]
    said = re.fullmatch(rf"error: disk full: cannot write {re.escape(str(folder))}/ckpt/state\.pt: it needs "
                        r"([\d,]+) bytes and ([\d,]+) bytes are free there", line)
    assert said, err
    needed, free = (int(n.replace(",", "")) for n in said.groups())
    assert needed > free
    info = _info(folder)
    assert (info["status"], info["step"], info["error"]) == ("failed", 10, line.removeprefix("error: "))
    rows, _ = straight
    assert _rows(folder) == rows[:11]  # every row up to the failed checkpoint
    assert not list(folder.rglob(".*.tmp*"))
    subprocess.run(["mount", "-o", "remount,size=8m", str(tmpfs)], check=True)  # space freed
    run(_cfg(results))
    _assert_recovered(results, straight)


def test_a_full_disk_under_a_metrics_row_still_records_the_failure(tmpfs):
    folder = RunFolder(tmpfs / "run")
    folder.create({"suite": "s"})
    folder.write_info({"status": "running", "step": 3})
    filler = tmpfs / "filler"
    with open(filler, "wb", buffering=0) as f:  # every byte left
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    with pytest.raises(DiskFull, match=rf"^disk full: cannot write {folder.metrics_path}: it needs \d+ bytes and "
                                       r"\d+ bytes are free there$"):
        folder.append_metrics({"step": 4, "train_loss": 1.0})
    folder.close()
    folder.write_info({"status": "failed", "step": 3, "error": "disk full"})  # in the blocks it holds
    assert _info(folder.path)["status"] == "failed"


@pytest.mark.slow
def test_fsdp2_falls_back_past_a_damaged_distributed_checkpoint(tmp_path, shakespeare_bytes):
    """Two gloo processes: rank 0 killed in the row of step 9 (checkpoints at 4 and 8), a shard
    of the newest one cut; the resume takes the one at step 4 and logs every step once."""
    results = tmp_path / "results"
    args = [*SMALL_RUN, "budget.steps=12", "budget.eval_every=4", "train.ckpt_every=4", "train.parallel=fsdp",
            "train.micro_batch=2", f"results_dir={results}"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "runners.train", *args]
    killed = subprocess.run(torchrun, cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "OPTARENA_FAULT": "write:metrics.jsonl@11"})
    assert killed.returncode != 0
    folder = _folder(results, *args[len(SMALL_RUN):])
    entries = json.loads((folder / "ckpt" / "manifest.json").read_text())["checkpoints"]
    assert [(e["step"], e["dir"]) for e in entries] == [(8, "dcp-8"), (4, "dcp-4")]
    shard, size = next((name, size) for name, size in entries[0]["files"].items() if name.endswith(".distcp"))
    os.truncate(folder / "ckpt" / "dcp-8" / shard, size // 2)
    resumed = subprocess.run(torchrun, cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _warnings(resumed.stderr) == [
        f"warning: {folder.name}: the checkpoint at step 8 is missing or damaged (ckpt/dcp-8/{shard} is missing "
        f"or not its {size:,} bytes); resuming from the checkpoint at step 4"]
    assert [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == list(range(13))
    assert _info(folder)["status"] == "completed"
    assert sorted(p.name for p in (folder / "ckpt").iterdir()) == ["dcp-12", "manifest.json"]


@pytest.mark.parametrize("damage,message", [
    ("twice", r"metrics.jsonl: line 4 is step 20, after step 20: rows doubled or out of order$"),
    ("list", r"metrics.jsonl: line 3 is not a JSON object with an integer step$"),
    ("copied", r"run nano-adamw-lr0.001-s0 is in two folders, copy and nano-adamw-lr0.001-s0: keep one$"),
])
def test_the_report_refuses_doubled_rows_and_a_run_in_two_folders(tmp_path, damage, message):
    from analysis.load import ResultsError, load_runs
    from tests.fixtures_results import write_run

    folder = write_run(tmp_path / "tiny", "adamw", 0)
    lines = (folder / "metrics.jsonl").read_text().splitlines(keepends=True)
    if damage == "twice":  # two processes writing one run
        (folder / "metrics.jsonl").write_text("".join(lines[:3] + lines[2:]))
    elif damage == "list":
        (folder / "metrics.jsonl").write_text("".join(lines[:2] + ["[1, 2]\n"] + lines[2:]))
    else:
        shutil.copytree(folder, folder.with_name("copy"))
    with pytest.raises(ResultsError, match=message):
        load_runs(tmp_path / "tiny")
