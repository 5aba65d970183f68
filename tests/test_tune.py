"""Tuning: real worker processes on real SQLite and journal storages, trials that are real runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

import optimizers
import pytest
import yaml

from analysis.load import load_tuning
from runners.config import ConfigError
from runners.hydra_app import compose_config
from runners.suite import expand, run_suite
from runners.tune import create_studies, options, study_specs, tune
from runners.tune_worker import storage
from tests.conftest import REPO, SMALL_RUN, TINY

# SMALL_RUN at 12 steps, evaluated every 4: a trial takes a fraction of a second.
TUNE = [*TINY, *SMALL_RUN, "budget.steps=12", "budget.eval_every=4", "tune.widen=0", "only=[adamw]"]
GRID = [1e-3, 0.00518, 0.0268, 0.139, 0.72, 3.73, 19.3, 100.0]  # 8 log-spaced lrs over [1e-3, 100]


def _cmd(results: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "runners.tune", *TUNE, f"results_dir={results}", *overrides]


def _study(results: Path, name: str = "tiny-nano-adamw", kind: str = "sqlite") -> optuna.Study:
    tuning = results / "tiny" / "tuning"
    url = f"sqlite:///{tuning / 'optuna.db'}" if kind == "sqlite" else str(tuning / "journal.log")
    return optuna.load_study(study_name=name, storage=storage(url))


def _tuning_file(results: Path) -> dict:
    return json.loads((results / "tiny" / "tuning" / "tiny-nano-adamw.json").read_text())


def _run_info(results: Path, run_id: str) -> dict:
    return json.loads((results / "tiny" / "tuning" / "trials" / run_id / "run.json").read_text())


@pytest.fixture(scope="module")
def grid_study(tmp_path_factory, shakespeare_bytes):
    """8 trials by 4 workers on a fresh SQLite study; the grid reaches lrs that diverge."""
    results = tmp_path_factory.mktemp("tune") / "results"
    done = subprocess.run(_cmd(results, "tune.trials=8", "tune.workers=4", "tune.sampler=grid",
                               "tune.lr_range=[1e-3,100]"),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return results, done.stdout


@pytest.mark.slow
def test_four_workers_on_a_fresh_sqlite_study_run_every_trial_once(grid_study):
    results, out = grid_study
    trials = _study(results).get_trials()
    assert sorted(t.number for t in trials) == list(range(8))
    assert all(t.state.is_finished() for t in trials)
    # the grid, each point once: nothing asked twice, nothing lost
    assert sorted(t.params["lr"] for t in trials) == GRID
    folders = {p.name for p in (results / "tiny" / "tuning" / "trials").iterdir()}
    assert folders == {t.user_attrs["run_id"] for t in trials} and len(folders) == 8
    doc = _tuning_file(results)
    assert doc["n_trials"] == 8 and sorted(r["number"] for r in doc["trials"]) == list(range(8))
    for row in doc["trials"]:
        info = _run_info(results, row["run_id"])
        assert info["status"] == row["status"]
        assert row["tokens"] == info["step"] * 8 * 32
        if row["status"] == "completed":
            assert row["value"] == info["summary"]["final_val_loss"]
    lines = [line for line in out.splitlines() if line.startswith("tiny-nano-adamw: trial")]
    assert len(lines) == 8
    assert len({line.rsplit("pid ", 1)[1] for line in lines}) >= 2  # the workers shared the trials


@pytest.mark.slow
def test_a_diverged_trial_is_recorded_with_its_lr_and_the_study_goes_on(grid_study):
    results, _ = grid_study
    rows = _tuning_file(results)["trials"]
    diverged = {r["params"]["lr"] for r in rows if r["status"] == "diverged"}
    assert {19.3, 100.0} <= diverged
    assert sum(r["status"] == "completed" for r in rows) >= 1
    for t in _study(results).get_trials():
        if t.params["lr"] in diverged:
            # PRUNED for optuna (TPE learns from it), diverged for us and for the run
            assert t.state == optuna.trial.TrialState.PRUNED and t.user_attrs["status"] == "diverged"
            info = _run_info(results, t.user_attrs["run_id"])
            assert info["status"] == "diverged" and info["diverged_at_step"] is not None
    by_budget = yaml.safe_load((results / "tiny" / "tuned.yaml").read_text())["nano"]
    assert list(by_budget) == [str(12 * 8 * 32)]  # keyed by the suite's budget in tokens
    tuned = by_budget[str(12 * 8 * 32)]["adamw"]
    lo, hi = tuned["stable_band"]
    assert lo <= tuned["lr"] <= hi < min(diverged)
    assert tuned["trials"] == 8 and tuned["trial_seed"] == 1000 and tuned["lr_range"] == [1e-3, 100]


@pytest.mark.slow
def test_the_tuned_lr_feeds_a_suite_and_its_report(grid_study):
    results, _ = grid_study
    rows = _tuning_file(results)["trials"]
    best = min((r for r in rows if r["value"] is not None), key=lambda r: r["value"])
    overrides = [*TUNE[:-1], f"results_dir={results}", "optimizers={adamw:{lr:tuned}}"]
    assert [r["optimizer"]["lr"] for r in expand(compose_config(overrides))] == [best["params"]["lr"]]
    table = load_tuning(results / "tiny")
    assert len(table) == 8 and set(table.status) <= {"completed", "pruned", "diverged"}
    with pytest.raises(ConfigError, match=r"no lr for nano/adamw at this budget of 6,144 tokens "
                                          r"\(tuned at 3,072, 81,920 tokens only\)"):
        expand(compose_config([*overrides, "budget.steps=24"]))  # tuned at another budget: refused
    run_suite(overrides)  # one run at the tuned lr, then the report
    report = (results / "tiny" / "report.md").read_text()
    assert "tiny-nano-adamw" in report and f"{best['params']['lr']:.3g}" in report


@pytest.mark.slow
def test_pruned_trials_stop_early_and_are_recorded_as_pruned(tmp_path, shakespeare_bytes):
    # One worker, a grid whose seed-0 order puts the good lr first: the two poor ones are then
    # worse than the median at their first evaluation past the first quarter, and pruned there.
    tune([*TUNE, f"results_dir={tmp_path}", "tune.trials=3", "tune.sampler=grid",
          "tune.lr_range=[1e-5,1e-2]", "tune.startup_trials=1", "budget.schedule=cosine"])
    trials = _study(tmp_path).get_trials()
    assert [t.params["lr"] for t in trials] == [1e-2, 3.16e-4, 1e-5]
    assert trials[0].state == optuna.trial.TrialState.COMPLETE
    assert sorted(trials[0].intermediate_values) == [4, 8]
    rows = {r["number"]: r for r in _tuning_file(tmp_path)["trials"]}
    for t in trials[1:]:
        assert t.state == optuna.trial.TrialState.PRUNED and rows[t.number]["status"] == "pruned"
        assert rows[t.number]["value"] is None
        info = _run_info(tmp_path, t.user_attrs["run_id"])
        assert info["status"] == "pruned" and info["step"] == 4 < info["total_steps"]


def _last_steps(trials_dir: Path) -> dict[str, int]:
    steps = {}
    for m in trials_dir.glob("*/metrics.jsonl"):
        lines = [line for line in m.read_text().splitlines() if line.endswith("}")]
        if lines:
            steps[m.parent.name] = json.loads(lines[-1])["step"]
    return steps


@pytest.mark.slow
def test_a_killed_tuning_job_continues_its_study_when_launched_again(tmp_path, shakespeare_bytes):
    results = tmp_path / "results"
    trials_dir = results / "tiny" / "tuning" / "trials"
    cmd = _cmd(results, "tune.trials=6", "tune.workers=4", "tune.storage=journal", "tune.pruner=none",
               "budget.steps=40", "train.ckpt_every=4")
    job = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:  # SIGKILL the whole job (its workers too) once two trials are past a checkpoint
        deadline = time.time() + 240
        while sum(8 <= s < 40 for s in _last_steps(trials_dir).values()) < 2:
            assert job.poll() is None and time.time() < deadline, "the job ended before it could be killed"
            time.sleep(0.1)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    first = _study(results, kind="journal").get_trials()
    running = {t.number: t for t in first if t.state == optuna.trial.TrialState.RUNNING}
    # A metrics row past step 4 means its step-4 checkpoint is written (rows come first).
    steps = _last_steps(trials_dir)
    resumable = {n: t for n, t in running.items() if steps.get(t.user_attrs.get("run_id"), 0) > 4}
    assert len(resumable) >= 2
    started = {n: _run_info(results, t.user_attrs["run_id"])["env"]["started_at"] for n, t in resumable.items()}

    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    names = optuna.get_all_study_names(storage(str(results / "tiny" / "tuning" / "journal.log")))
    assert names == ["tiny-nano-adamw"]  # the same study, continued
    trials = _study(results, kind="journal").get_trials()
    assert sorted(t.number for t in trials) == list(range(6))  # 6 in all, not 6 more
    assert all(t.state.is_finished() for t in trials)
    assert len(list(trials_dir.iterdir())) == 6
    for n, before in resumable.items():  # the interrupted trials finished in their own run folders
        assert trials[n].params == before.params
        info = _run_info(results, before.user_attrs["run_id"])
        assert info["status"] in ("completed", "diverged") and info["step"] == 40
        assert info["env"]["started_at"] == started[n]  # resumed from the checkpoint, not restarted
    for m in trials_dir.glob("*/metrics.jsonl"):  # resumed runs kept no duplicated rows
        steps = [json.loads(line)["step"] for line in m.read_text().splitlines()]
        assert steps == sorted(set(steps))


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_a_stop_signal_to_the_tuning_process_alone_stops_its_workers_and_a_relaunch_resumes(
        tmp_path, shakespeare_bytes):
    results = tmp_path / "results"
    trials_dir = results / "tiny" / "tuning" / "trials"
    cmd = _cmd(results, "tune.trials=2", "tune.workers=2", "budget.steps=40", "train.ckpt_every=4")
    job = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        deadline = time.time() + 240
        while sum(8 <= s < 40 for s in _last_steps(trials_dir).values()) < 2:
            assert job.poll() is None and time.time() < deadline, "the job ended before it could be stopped"
            time.sleep(0.1)
        workers = [int(p) for p in Path(f"/proc/{job.pid}/task/{job.pid}/children").read_text().split()]
        os.kill(job.pid, signal.SIGTERM)  # the tuning process alone, as `kill PID` sends it
        out, _ = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert len(workers) == 2 and not any(_alive(pid) for pid in workers), out  # none runs on, orphaned
    assert job.returncode != 0 and out.count("interrupted (") == 2 and "run again to resume" in out, out
    stopped = {p.name: s for p, s in ((m.parent, json.loads(m.parent.joinpath("run.json").read_text()))
                                      for m in trials_dir.glob("*/metrics.jsonl"))}
    assert len(stopped) == 2 and all(s["status"] == "interrupted" for s in stopped.values())

    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in trials_dir.iterdir()) == sorted(stopped)  # the same two trials, resumed
    for name, before in stopped.items():
        after = _run_info(results, name)
        assert after["step"] == 40 and after["env"]["started_at"] == before["env"]["started_at"]


def test_the_pruner_is_off_under_wsd_and_one_named_beside_it_is_refused():
    assert options(compose_config(TUNE))["pruner"] == "none"  # the tiny suite's schedule is wsd
    assert options(compose_config([*TUNE, "budget.schedule=cosine"]))["pruner"] == "median"
    assert options(compose_config([*TUNE, "budget.schedule=cosine", "tune.pruner=hyperband"]))["pruner"] == "hyperband"
    with pytest.raises(ConfigError, match=r"tune.pruner=median with budget.schedule=wsd: .* set tune.pruner=none"):
        options(compose_config([*TUNE, "tune.pruner=median"]))


def test_options_are_checked_and_every_problem_reported_at_once():
    with pytest.raises(ConfigError) as e:  # kinds and choices: the schema, at composition
        compose_config([*TUNE, "tune.trials=0", "tune.sampler=random", "tune.pruner=sometimes"])
    text = "\n".join(e.value.errors)
    for needle in ("tune.trials=0", "tune.sampler='random'", "tune.pruner='sometimes'"):
        assert needle in text
    with pytest.raises(ConfigError, match="unknown key tune.bogus"):
        compose_config([*TUNE, "tune.bogus=1"])
    cfg = compose_config([*TUNE, "tune.lr_range=[1e-2,1e-3]", "tune.storage=redis"])
    with pytest.raises(ConfigError) as e:  # ranges and combinations: the tuner
        options(cfg)
    text = "\n".join(e.value.errors)
    assert "tune.lr_range=[0.01, 0.001]" in text and "tune.storage='redis'" in text
    grid = compose_config([*TUNE, "tune.sampler=grid", "tune.search_warmup=true"])
    with pytest.raises(ConfigError, match="grid searches the lr alone"):
        options(grid)


def test_every_optimizer_gets_the_same_trial_budget_with_its_schedule_rederived(tmp_path, shakespeare_bytes):
    cfg = compose_config([*TUNE, "only=[adamw,lamb,sm3]", f"results_dir={tmp_path}", "budget.steps=40",
                          "budget.warmup=4", "budget.eval_every=10", "tune.budget_fraction=0.5",
                          "tune.search_weight_decay=true"])
    specs = study_specs(cfg, options(cfg))
    assert [s["optimizer"] for s in specs] == ["adamw", "lamb", "sm3"]
    for s in specs:
        b = s["resolved"]["budget"]
        assert (b["steps"], b["warmup_steps"], b["eval_every"]) == (20, 2, 5)  # 4 evaluations at least
        assert s["space"]["lr"] == [*optimizers.spec(s["optimizer"]).lr_range, True]  # its own range
        assert s["template"]["seed"] == 1000  # a seed the comparison never uses
        assert s["template"]["results_dir"] == str(tmp_path / "tiny" / "tuning")
    assert "weight_decay" in specs[0]["space"] and "weight_decay" not in specs[2]["space"]  # SM3 has none


def test_a_study_is_not_continued_under_another_setup(tmp_path, shakespeare_bytes):
    def create(*overrides):
        cfg = compose_config([*TUNE, f"results_dir={tmp_path}", *overrides])
        plan = {"dir": str(tmp_path), "storage": f"sqlite:///{tmp_path / 'optuna.db'}"}
        create_studies(plan, study_specs(cfg, options(cfg)))

    create()
    create("tune.trials=40", "tune.pruner=none")  # more trials, another pruner: the same study
    with pytest.raises(ConfigError, match=r"tiny-nano-adamw .* another setup \(differing: run\)"):
        create("tune.budget_fraction=0.5")


def test_a_best_lr_at_the_edge_widens_the_search_beyond_it(tmp_path, shakespeare_bytes):
    """AdamW searched over lrs far too small: each time the best lies at the high edge, a study of
    half the trials goes on a decade beyond it; tuned.yaml takes the best of them all."""
    results = tmp_path / "results"
    done = subprocess.run(_cmd(results, "tune.trials=4", "tune.sampler=grid", "tune.lr_range=[1e-6,1e-5]",
                               "tune.widen=2", "tune.pruner=none"),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("tiny-nano-adamw: the best lr is at the high edge of the lrs searched; widening") == 2
    assert "2 more trials over [1e-05, 0.0001] (tiny-nano-adamw-wider1)" in done.stdout
    assert "2 more trials over [0.0001, 0.001] (tiny-nano-adamw-wider2)" in done.stdout
    # still at the edge after the last widening: said so, with what to do
    assert "warning: tiny-nano-adamw: the best lr 0.001 is at the high edge of the lrs searched, [1e-06, 0.001]" \
        in done.stdout
    tuning = results / "tiny" / "tuning"
    lrs = {name: [t["params"]["lr"] for t in json.loads((tuning / f"{name}.json").read_text())["trials"]]
           for name in ("tiny-nano-adamw", "tiny-nano-adamw-wider1", "tiny-nano-adamw-wider2")}
    assert sorted(lrs["tiny-nano-adamw-wider1"]) == [3.16e-05, 1e-04]  # beyond 1e-5, not 1e-5 again
    assert sorted(lrs["tiny-nano-adamw-wider2"]) == [3.16e-04, 1e-03]
    [(tokens, by_opt)] = yaml.safe_load((results / "tiny" / "tuned.yaml").read_text())["nano"].items()
    entry = by_opt["adamw"]
    assert (entry["lr"], entry["trials"], entry["lr_range"], entry["at_edge"]) == (1e-3, 8, [1e-6, 1e-3], "high")
    assert entry["widens"] == ["tiny-nano-adamw", "tiny-nano-adamw-wider1"]
    assert set(load_tuning(results / "tiny").study) == set(lrs)  # the report counts every trial
