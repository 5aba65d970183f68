"""Hydra's command line on the entry points: --help, --cfg, --info, shell completion, -m sweeps
as a suite's grid, a user's own suites folder; no outputs/ folder and no change of directory."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import optimizers

from runners.config import resolve_run, run_id
from runners.hydra_app import compose_config
from runners.suite import resolve_all
from tests.conftest import REPO, SMALL_RUN, TINY

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
SHORT = [*SMALL_RUN, "budget.steps=4", "budget.eval_every=2"]


def _cli(module: str, *args: str, cwd: Path, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True,
                          text=True, env=env or ENV, timeout=600)


@pytest.mark.parametrize("module", ["runners.train", "runners.suite", "runners.tune"])
def test_help_lists_groups_choices_and_keys(module, tmp_path):
    out = _cli(module, "--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "optimizer: " + ", ".join(sorted(optimizers.names())) in text
    assert "suite: gpt2_medium, gpt2_scaling, gpt2_small, gpt2_small_lr_grid, gpt2_xl, tiny, tiny_2026, tiny_scaling" in text
    for key in ("budget.tokens", "train.micro_batch", "tune.trials", "launcher.nproc_per_node", "--multirun"):
        assert key in text
    assert not any(tmp_path.iterdir())  # no outputs/, nothing at all


def test_cfg_job_prints_the_checked_config_and_runs_nothing(tmp_path):
    out = _cli("runners.train", "--cfg", "job", "optimizer=lamb", "budget.steps=7",
               f"results_dir={tmp_path / 'r'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["optimizer"]["name"] == "lamb" and cfg["optimizer"]["eps"] == 1e-6  # lamb's defaults
    assert cfg["budget"]["steps"] == 7 and cfg["budget"]["tokens"] is None  # steps alone: tokens cleared
    assert not any(tmp_path.iterdir())
    package = _cli("runners.train", "--cfg", "job", "--package", "budget", "budget.steps=7", cwd=tmp_path)
    assert yaml.safe_load(package.stdout)["steps"] == 7
    bad = _cli("runners.train", "--cfg", "job", "budget.stepz=7", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown key budget.stepz")


def test_info_shows_hydra_search_path_with_a_users_folder(tmp_path):
    mine = tmp_path / "mine"
    (mine / "suite").mkdir(parents=True)
    out = _cli("runners.suite", "--info", "searchpath", "--config-dir", str(mine), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert str(mine) in out.stdout and "suites" in out.stdout
    assert set(tmp_path.iterdir()) == {mine}


def test_shell_completion_query_completes_groups_and_keys(tmp_path):
    def query(line: str) -> list[str]:
        out = _cli("runners.train", "-sc", "query=bash", cwd=tmp_path,
                   env={**ENV, "COMP_LINE": line, "COMP_POINT": str(len(line))})
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert query("optarena-train optimizer=la") == ["optimizer=lamb"]
    assert "budget.global_batch=" in query("optarena-train budget.gl")
    install = _cli("runners.train", "-sc", "install=bash", cwd=tmp_path)
    assert "complete" in install.stdout and "hydra_bash_completion" in install.stdout


def test_a_users_own_suites_folder(tmp_path):
    mine = tmp_path / "my_suites" / "suite"
    mine.mkdir(parents=True)
    (mine / "mine.yaml").write_text("# @package _global_\ndefaults:\n  - override /budget: tiny\n"
                                    "suite: mine\noptimizers: [adamw, lamb]\nseeds: 2\n")
    out = _cli("runners.suite", "--config-dir", str(tmp_path / "my_suites"), "suite=mine", "plan=true",
               *SHORT, f"results_dir={tmp_path / 'r'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "suite mine: 4 runs" in out.stdout
    searchpath = _cli("runners.suite", f"hydra.searchpath=[file://{tmp_path / 'my_suites'}]", "suite=mine",
                      "plan=true", *SHORT, f"results_dir={tmp_path / 'r'}", "plan_device=H100", cwd=tmp_path)
    assert searchpath.returncode == 0 and "suite mine: 4 runs on h100" in searchpath.stdout, searchpath.stderr
    missing = _cli("runners.suite", "--config-dir", str(tmp_path / "nowhere"), "suite=mine", cwd=tmp_path)
    assert missing.returncode == 2 and "--config-dir" in missing.stderr


def test_multirun_is_the_suites_grid_with_its_run_ids_and_skipping(tmp_path, shakespeare_bytes):
    results = tmp_path / "r"
    sweep = ["-m", "optimizer=adamw,lamb", "optimizer.lr=1e-3,3e-3", "seed=0,1"]
    first = _cli("runners.train", *sweep, *SHORT, f"results_dir={results}", "report=false", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "8 runs, 0 finished, 8 to run" in first.stdout
    made = {p.name for p in (results / "adhoc").iterdir() if p.is_dir()}
    # The same runs as eight single runs would make, and as a suite file with this grid
    singles = {run_id(resolve_run(compose_config([f"optimizer={o}", f"optimizer.lr={lr}", f"seed={s}",
                                                  *SHORT, f"results_dir={results}"])))
               for o in ("adamw", "lamb") for lr in ("1e-3", "3e-3") for s in (0, 1)}
    grid = compose_config(["optimizers={adamw: {lr: [1e-3, 3e-3]}, "
                           "lamb: {lr: [1e-3, 3e-3]}}", "seeds=[0,1]", *SHORT, f"results_dir={results}"])
    assert made == singles == {run_id(c) for c in resolve_all(grid, check_data=False)}
    again = _cli("runners.train", *sweep, *SHORT, f"results_dir={results}", "report=false", cwd=tmp_path)
    assert again.returncode == 0 and "8 runs, 8 finished, 0 to run" in again.stdout
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


def test_plan_on_train_and_tune_runs_nothing(tmp_path):
    train = _cli("runners.train", "plan=true", "optimizer=lamb", *SHORT, f"results_dir={tmp_path / 'r'}",
                 cwd=tmp_path)
    assert train.returncode == 0 and "nano   lamb" in train.stdout, train.stderr
    tune = _cli("runners.tune", *TINY, "only=[adamw,lamb]", "plan=true", "tune.trials=3", *SHORT,
                f"results_dir={tmp_path / 'r'}", cwd=tmp_path)
    assert tune.returncode == 0 and "tiny-nano-lamb" in tune.stdout, tune.stderr
    assert not (tmp_path / "r").exists()
