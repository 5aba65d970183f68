"""Cooldown branches (runners/branches.py): a wsd run of 30 steps keeps its checkpoints where the
cooldowns of 15 and 24 steps start, and each branch computes exactly what a dedicated wsd run of
its budget computes; branches resume, skip and show in the plan like any run."""

import json
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from runners.config import ConfigError
from runners.hydra_app import compose_config
from runners.suite import resolve_all, run_folder, run_suite
from runners.train import Interrupted, run
from tests.conftest import SMALL_RUN, TINY

TIMING = {"time_fwd_bwd_s", "time_opt_s", "tokens_per_s", "wall_time_s", "peak_mem_bytes"}
# ademamix: its alpha and beta3 warmups follow the main run's budget, in the branch too
SUITE = [*TINY, *SMALL_RUN, "only=[adamw,ademamix]", "budget.schedule=wsd", "budget.warmup=3",
         "budget.cooldown=0.2", "branches=[0.5,0.8]", "report=false"]


def _rows(folder: Path) -> list[dict]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def _weights(folder: Path) -> dict:
    return torch.load(folder / "ckpt" / "state.pt", weights_only=False)["model"]


def _dedicated(results: Path, branch: dict) -> Path:
    """A wsd run of the branch's budget from step 0, with the same warmup steps and options."""
    opt = {k: v for k, v in branch["optimizer"].items() if k != "name"}
    overrides = [*SMALL_RUN, f"results_dir={results}", f"optimizer={branch['optimizer']['name']}",
                 f"budget.steps={branch['budget']['steps']}", "budget.schedule=wsd", "budget.warmup=3",
                 "budget.cooldown=0.2", *(f"optimizer.{k}={json.dumps(v)}" for k, v in opt.items())]
    cfg = compose_config(overrides)
    run(cfg)
    return run_folder(resolve_all(cfg)[0]).path


@pytest.fixture(scope="module")
def suite(tmp_path_factory, shakespeare_bytes):
    results = tmp_path_factory.mktemp("branches")
    args = [*SUITE, f"results_dir={results}"]
    runs = run_suite(args)
    return results, args, runs


def test_a_suite_runs_each_main_run_then_its_branches(suite):
    _, _, runs = suite
    mains = [r for r in runs if not r.get("branch")]
    branches = [r for r in runs if r.get("branch")]
    assert len(mains) == 2 and len(branches) == 4
    assert {r["budget"]["steps"] for r in branches} == {15, 24}
    for b in branches:
        parent = run_folder(next(m for m in mains if run_folder(m).path.name == b["branch"]["parent"]))
        # the cooldown of 15 steps starts at step 12, of 24 at step 19 (20% of each, rounded)
        assert b["branch"]["from_step"] == {15: 12, 24: 19}[b["budget"]["steps"]]
        folder = run_folder(b).path
        assert folder.name.startswith(f"{parent.path.name}-to{b['budget']['steps']}-")
        info = json.loads((folder / "run.json").read_text())
        assert info["status"] == "completed" and info["config"]["branch"] == b["branch"]
        # its curve is whole: its parent's rows up to the branch point, then its own
        rows = _rows(folder)
        assert [r["step"] for r in rows] == list(range(b["budget"]["steps"] + 1))
        # ... its parent's very rows, timings included: the branch did not train those steps again
        k = b["branch"]["from_step"]
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        assert lines[:k + 1] == (parent.path / "metrics.jsonl").read_text().splitlines()[:k + 1]


@pytest.mark.parametrize("optimizer", ["adamw", "ademamix"])
def test_a_branch_equals_a_dedicated_wsd_run_bit_for_bit(suite, optimizer, tmp_path):
    _, _, runs = suite
    branch = next(r for r in runs if r.get("branch") and r["optimizer"]["name"] == optimizer
                  and r["budget"]["steps"] == 15)
    dedicated = _dedicated(tmp_path, branch)
    folder = run_folder(branch).path
    assert _rows(folder) == _rows(dedicated)
    theirs = _weights(dedicated)
    assert all(torch.equal(w, theirs[k]) for k, w in _weights(folder).items())


def test_an_fsdp_branch_equals_a_dedicated_fsdp_run_bit_for_bit(tmp_path):
    """Under FSDP2 (2 gloo ranks) a main run keeps its sharded checkpoint (hard links to every
    rank's files) and the branch loads it on every rank."""
    wsd = [*TINY, *SMALL_RUN, "only=[adamw]", "budget.schedule=wsd", "budget.warmup=3", "budget.cooldown=0.2",
           "report=false", "launcher=torchrun", "launcher.nproc_per_node=2", "train.parallel=fsdp"]
    runs = run_suite([*wsd, "branches=[0.5]", f"results_dir={tmp_path / 'suite'}"])
    branch = next(r for r in runs if r.get("branch"))
    dedicated = run_suite([*wsd, f"budget.steps={branch['budget']['steps']}",
                           f"results_dir={tmp_path / 'dedicated'}"])[0]
    assert json.loads((run_folder(branch).path / "run.json").read_text())["env"]["world_size"] == 2
    assert _rows(run_folder(branch).path) == _rows(run_folder(dedicated).path)


def test_a_relaunch_skips_finished_branches_and_the_plan_shows_them(suite, capsys):
    results, args, runs = suite
    stamps = {p: p.stat().st_mtime_ns for p in results.rglob("run.json")}
    run_suite(args)
    assert {p: p.stat().st_mtime_ns for p in results.rglob("run.json")} == stamps
    capsys.readouterr()
    run_suite([*args, "plan=true"])
    plan = capsys.readouterr().out
    for b in (r for r in runs if r.get("branch")):
        assert run_folder(b).path.name in plan


def test_an_interrupted_branch_resumes_exactly(suite, tmp_path):
    _, _, runs = suite
    branch = next(r for r in runs if r.get("branch") and r["optimizer"]["name"] == "adamw"
                  and r["budget"]["steps"] == 24)
    parent = run_folder(next(r for r in runs if run_folder(r).path.name == branch["branch"]["parent"])).path
    # the same branch in another results folder, beside a copy of its parent
    copy = tmp_path / "tiny"
    os.makedirs(copy)
    os.system(f"cp -a {parent} {copy}/")
    moved = {**branch, "results_dir": str(tmp_path)}
    interrupt = lambda step, tokens, loss: os.kill(os.getpid(), signal.SIGTERM) if step == 20 else False  # noqa: E731
    with pytest.raises(Interrupted):
        run(moved, on_eval=interrupt)
    assert json.loads((copy / run_folder(branch).path.name / "run.json").read_text())["status"] == "interrupted"
    run(moved)
    assert _rows(copy / run_folder(branch).path.name) == _rows(run_folder(branch).path)


def test_branches_are_checked_before_anything_runs(tmp_path):
    base = [*TINY, *SMALL_RUN, "only=[adamw]", f"results_dir={tmp_path}"]
    with pytest.raises(ConfigError, match="branches need a warmup-stable-decay run: set budget.schedule=wsd"):
        resolve_all(compose_config([*base, "branches=[0.5]", "budget.schedule=cosine"]))
    with pytest.raises(ConfigError, match="inside the warmup of 3 steps"):
        resolve_all(compose_config([*base, "branches=[0.1]", "budget.schedule=wsd", "budget.warmup=3"]))
    assert not any(tmp_path.iterdir())


def test_a_branch_without_its_parents_checkpoint_says_what_to_do(suite, tmp_path):
    _, _, runs = suite
    branch = next(r for r in runs if r.get("branch"))
    with pytest.raises(Exception, match=f"its parent {branch['branch']['parent']} has no kept checkpoint of step "
                                        f"{branch['branch']['from_step']}: run the parent first"):
        run({**branch, "results_dir": str(tmp_path)})


@pytest.mark.slow
def test_adamw_against_adamw_on_other_seeds_is_a_speedup_of_one(tmp_path, shakespeare_bytes):
    """Real runs: AdamW's branches at 10, 20 and 40 steps on seeds 0-3 are the baseline's law,
    and AdamW on seeds 4-7 is the arm: its end-of-schedule speedup interval covers 1.00 at every
    budget. With cosine_check, cosine runs of the branches' budgets beside them: the report holds
    each branch against them, the gap the README states."""
    from analysis.compare import compare, endpoints
    from analysis.report import cosine_table
    from analysis.schedule_check import gaps
    from analysis.speedup import endpoint_speedup

    base = [*TINY, *SMALL_RUN, "only=[adamw]", "budget.steps=40", "budget.warmup=3", "budget.schedule=wsd",
            "branches=[0.25,0.5]", "cosine_check=true", "report=false", "seeds=8"]
    runs = run_suite([*base, f"results_dir={tmp_path}"])
    assert sum(r["budget"]["schedule"] == "cosine" for r in runs) == 16  # 10 and 20 steps, 8 seeds
    cs = compare(tmp_path / "tiny")
    points = endpoints(cs)[["tokens", "seed", "loss"]]
    assert sorted(points.tokens.unique()) == [2560, 5120, 10240]  # 10, 20 and 40 steps of 8 x 32
    assert len(points) == 3 * 8  # the cosine runs are no arm of the comparison
    first, other = points[points.seed < 4], points[points.seed >= 4]
    for tokens in (2560, 5120, 10240):
        s = endpoint_speedup(first, other, tokens)
        assert s.lo <= 1.0 <= s.hi, (tokens, s)
    g = gaps(pd.concat([c.runs for c in cs]), cs[0].checks, cs[0].loss)
    print(cosine_table(cs).to_string())
    assert list(g.tokens) == [2560, 5120] and (g.seeds == 8).all()
    # Not within the seed noise at budgets this short: a cosine run decays from its first steps
    # after warmup, the branch only in its last 20% (measured -0.13 at 10 steps, -0.36 at 20).
    assert (g.gap_hi < 0).all() and g.verdict.str.startswith("not within the seed noise: the branch ends").all()


def test_a_gap_within_the_seed_sd_is_noise_and_a_larger_one_is_measured_in_sds():
    from analysis.schedule_check import gap

    cosine = np.array([3.00, 3.10, 2.90, 3.05, 2.95, 3.00])  # seed sd 0.071
    assert gap(cosine + 0.05, cosine)["verdict"] == "within the seed noise"
    far = gap(cosine - 0.2, cosine)
    assert far["verdict"] == "not within the seed noise: the branch ends 0.2000 below (2.8x the seed sd)"
    assert far["gap_lo"] == far["gap_hi"] == pytest.approx(-0.2)  # the same gap on every seed
