"""The training engine end to end: the run folder, exact resume, idempotency, divergence."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from runners.config import resolve_run, run_id
from runners.run_folder import SCHEMA_VERSION, atomic_file
from runners.train import run
from tests.conftest import REPO, SMALL_RUN

TIMING_KEYS = {"time_fwd_bwd_s", "time_opt_s", "tokens_per_s", "wall_time_s", "peak_mem_bytes"}


def _folder(cfg: dict) -> Path:
    resolved = resolve_run(cfg)
    return Path(resolved["results_dir"]) / resolved["suite"] / run_id(resolved)


def _metrics(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _params(folder: Path) -> dict:
    return torch.load(folder / "ckpt" / "state.pt", weights_only=False)["model"]


def test_a_run_writes_its_folder(small_cfg):
    info = run(small_cfg())
    folder = _folder(small_cfg())
    assert info["status"] == "completed" and info["schema_version"] == SCHEMA_VERSION
    on_disk = json.loads((folder / "run.json").read_text())
    assert on_disk["run_id"] == folder.name and on_disk["config"]["budget"]["steps"] == 30
    s = on_disk["summary"]
    assert s["tokens"] == 30 * 8 * 32 and s["final_val_loss"] < 5.5 and s["mfu"] is None
    n_tensors = len(_params(folder)) - 1  # the state dict lists the tied lm_head.weight again
    assert s["opt_state_bytes"] == 2 * 4 * s["param_count"] + 4 * n_tensors
    rows = _metrics(folder)
    assert [r["step"] for r in rows] == list(range(31))
    assert [r["step"] for r in rows if "val_loss" in r] == [0, 10, 20, 30]
    assert (folder / "config.yaml").exists()
    env = on_disk["env"]
    assert env["packages"]["torch"].startswith("2.13.0") and env["world_size"] == 1


def test_rerunning_a_finished_run_does_nothing(small_cfg):
    run(small_cfg())
    folder = _folder(small_cfg())
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    info = run(small_cfg())
    assert info["status"] == "completed"
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_run_id_is_a_pure_function_of_what_is_computed(small_cfg):
    a = resolve_run(small_cfg())
    assert run_id(a) == run_id(resolve_run(small_cfg("train.log_every=5", "train.ckpt_every=7")))
    assert run_id(a) != run_id(resolve_run(small_cfg("optimizer.lr=3e-4")))
    assert run_id(a) != run_id(resolve_run(small_cfg("seed=1")))


def _train_process(overrides: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runners.train", *overrides], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for_step(folder: Path, step: int, proc: subprocess.Popen, timeout=120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.stdout.read().decode()[-2000:]}")
        f = folder / "metrics.jsonl"
        if f.exists():
            lines = f.read_text().splitlines()
            if lines and json.loads(lines[-1])["step"] >= step:
                return
        time.sleep(0.01)
    raise AssertionError(f"no step {step} within {timeout}s")


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_resume_is_exact(small_cfg, tmp_path, how):
    """N steps in one go == k steps + kill + resume + N-k steps, bit for bit on CPU."""
    overrides = [*SMALL_RUN, "budget.steps=40", "train.ckpt_every=10"]
    straight = [*overrides, f"results_dir={tmp_path / 'straight'}"]
    killed = [*overrides, f"results_dir={tmp_path / 'killed'}"]
    assert subprocess.run([sys.executable, "-m", "runners.train", *straight], cwd=REPO,
                          capture_output=True).returncode == 0

    from runners.hydra_app import compose_config
    folder = _folder(compose_config(killed))
    proc = _train_process(killed)
    _wait_for_step(folder, 13, proc)  # past the step-10 checkpoint, before the next one
    proc.send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGTERM)
    proc.wait(timeout=60)
    status = json.loads((folder / "run.json").read_text())["status"]
    assert status == ("running" if how == "sigkill" else "interrupted")
    if how == "sigterm":  # checkpointed, and says so: the exit status of a TERM-ed job
        assert proc.returncode == 143 and b"run again to resume" in proc.stdout.read()
    if how == "sigkill":  # the metrics hold rows past the checkpoint that resume must drop
        assert json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])["step"] > 10
    resumed = subprocess.run([sys.executable, "-m", "runners.train", *killed], cwd=REPO,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    straight_folder = _folder(compose_config(straight))
    assert _metrics(folder) == _metrics(straight_folder)
    a, b = _params(folder), _params(straight_folder)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((folder / "run.json").read_text())["status"] == "completed"


def test_a_checkpoint_write_that_fails_midway_leaves_the_previous_one(tmp_path):
    path = tmp_path / "state.pt"
    with atomic_file(path) as f:
        torch.save({"step": 1}, f)
    with pytest.raises(RuntimeError), atomic_file(path) as f:
        f.write(b"half a checkpoint")
        raise RuntimeError("killed mid-save")
    assert torch.load(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary file left behind


def test_divergence_ends_the_run_cleanly(small_cfg):
    info = run(small_cfg("optimizer.lr=30.0", "budget.warmup=0"))
    assert info["status"] == "diverged"
    step = info["diverged_at_step"]
    assert 1 <= step < 30
    rows = _metrics(_folder(small_cfg("optimizer.lr=30.0", "budget.warmup=0")))
    assert rows[-1]["step"] == step
    # Finished: running it again does nothing.
    assert run(small_cfg("optimizer.lr=30.0", "budget.warmup=0"))["diverged_at_step"] == step


def test_wandb_is_an_optional_offline_sink(small_cfg, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    info = run(small_cfg("train.wandb.mode=offline", "budget.steps=3"))
    assert info["status"] == "completed"
    folder = _folder(small_cfg("budget.steps=3"))
    offline = list((folder / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and offline[0].stat().st_size > 0
    assert len(_metrics(folder)) == 4  # the run folder is written as always
