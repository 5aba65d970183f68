"""Bring your own optimizer: one defined in a package outside the repository, named in a suite of a
folder outside it by `_target_` alone, runs under every launcher (local, torchrun, the tuner's
workers, SLURM) with exactly the state bytes the plan predicts; an installed package's optimizers
join through the `optarena.optimizers` entry points, and a broken one is a warning, not a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import optimizers
from optimizers import contract, registry
from runners import plan as planning
from runners.hydra_app import compose_config
from runners.suite import resolve_all, run_suite
from tests.conftest import REPO, SMALL_RUN

SHORT = [*SMALL_RUN, "budget.steps=4", "budget.eval_every=2"]

USER_PACKAGE = '''
import torch


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023), written the torch.optim way."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(m * beta1 + p.grad * (1 - beta1)), alpha=-group["lr"])
                m.lerp_(p.grad, 1 - beta2)


def build(model, lr, momentum=0.9):
    """A factory: it groups the parameters itself."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
'''

SUITE = """\
# @package _global_
suite: byo
optimizers:
  my_lion: {_target_: mylion.Lion, lr: 3e-4, betas: [0.9, 0.99], weight_decay: 1.0, lr_range: [1e-5, 1e-3]}
  my_sgd: {_target_: mylion.build, lr: 1e-2}
  my_muon:
    _target_: torch.optim.Muon
    lr: 0.02
    param_groups: {rule: muon_style, adamw: {lr: 3e-3}}
seeds: [0]
"""

PLUGIN = '''
import torch

from optimizers import OptimizerSpec, register
from optimizers.grouping import decay_groups


def _build(model, lr, momentum, weight_decay):
    return torch.optim.SGD(decay_groups(model, weight_decay), lr=lr, momentum=momentum)


# A module entry point registers on import; no state count of its own: the harness steps a copy.
register(OptimizerSpec(name="plug_sgd", build=_build,
                       defaults=dict(lr=1e-2, momentum=0.9, weight_decay=0.0)))


def more():
    """A callable entry point: it returns the specs."""
    return [OptimizerSpec(name="plug_rmsprop",
                          build=lambda model, lr: torch.optim.RMSprop(model.parameters(), lr=lr),
                          defaults=dict(lr=1e-3))]
'''


@pytest.fixture(scope="module")
def byo(tmp_path_factory):
    """The user's package and suites folder, outside the repository; and the environment that
    finds the package, as the user's shell would."""
    root = tmp_path_factory.mktemp("byo")
    package = root / "userpkg" / "mylion"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(USER_PACKAGE)
    (root / "suites" / "suite").mkdir(parents=True)
    (root / "suites" / "suite" / "byo.yaml").write_text(SUITE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "userpkg"), str(REPO)])}
    return root, env


@pytest.fixture
def importable(byo, monkeypatch):
    """This process finds the user's package too (to plan, and to check what the runs measured)."""
    root, env = byo
    monkeypatch.syspath_prepend(str(root / "userpkg"))
    return root, env


def _cli(module: str, *args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _suite(results: Path, *more: str) -> list[str]:
    """The overrides of a tiny run of the user's suite (with --config-dir SUITES)."""
    return ["suite=byo", *SHORT, "report=false", f"results_dir={results}", *more]


def _config_dir(root: Path) -> list[str]:
    return ["--config-dir", str(root / "suites")]


def _runs(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*/run.json"))]


def _assert_completed_with_predicted_state(runs: list[dict], names: set[str], world_size: int = 1):
    assert {r["config"]["optimizer"]["name"] for r in runs} == names
    for r in runs:
        assert r["status"] == "completed" and r["env"]["world_size"] == world_size, r["run_id"]
        predicted = planning.estimate(r["config"], "cpu", world_size)
        assert r["summary"]["opt_state_bytes"] == predicted.state > 0, r["run_id"]
        assert predicted.state_found_by == "one step on the meta device"


def test_runs_under_launcher_local_with_the_state_the_plan_predicts(importable, tmp_path, capsys):
    root, env = importable
    out = _cli("runners.suite", *_config_dir(root), *_suite(tmp_path / "r", "launcher=local"), env=env,
               cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    runs = _runs(tmp_path / "r" / "byo")
    _assert_completed_with_predicted_state(runs, {"my_lion", "my_sgd", "my_muon"})
    # The whole spec is in the run's record (and its run_id): the arm's key names the run.
    lion = next(r for r in runs if r["config"]["optimizer"]["name"] == "my_lion")
    assert lion["run_id"].startswith("nano-my_lion-lr0.0003-s0-")
    assert lion["config"]["optimizer"] == {"name": "my_lion", "_target_": "mylion.Lion", "param_groups": "decay",
                                           "lr": 3e-4, "betas": [0.9, 0.99], "weight_decay": 1.0}
    muon = next(r for r in runs if r["config"]["optimizer"]["name"] == "my_muon")
    assert muon["config"]["optimizer"]["param_groups"] == {
        "rule": "muon_style", "adamw": {"lr": 3e-3, "betas": [0.9, 0.95], "eps": 1e-10, "weight_decay": 0.01}}

    # The plan, in this process: the same run_ids, finished, and how the state was found.
    run_suite(_suite(tmp_path / "r", "plan=true"), config_dir=str(root / "suites"))
    plan = capsys.readouterr().out
    assert all(r["run_id"] in plan for r in runs) and plan.count("finished") == 3
    assert "state of my_lion: one step on the meta device" in plan


def test_runs_under_torchrun_on_two_processes(importable, tmp_path):
    root, env = importable
    out = _cli("runners.suite", *_config_dir(root), *_suite(tmp_path / "r", "only=[my_lion]", "launcher=torchrun",
                                                            "launcher.nproc_per_node=2"), env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    _assert_completed_with_predicted_state(_runs(tmp_path / "r" / "byo"), {"my_lion"}, world_size=2)


def test_two_tuner_workers_tune_it_over_its_own_lr_range(importable, tmp_path):
    root, env = importable
    out = _cli("runners.tune", *_config_dir(root), *_suite(tmp_path / "r", "only=[my_lion]", "tune.workers=2",
                                                           "tune.trials=2", "tune.widen=0", "tune.pruner=none"),
               env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    tuned = yaml.safe_load((tmp_path / "r" / "byo" / "tuned.yaml").read_text())
    (entry,) = [arms["my_lion"] for arms in tuned["nano"].values()]
    assert entry["trials"] == 2 and entry["lr_range"] == [1e-5, 1e-3] and 1e-5 <= entry["lr"] <= 1e-3
    trials = _runs(tmp_path / "r" / "byo" / "tuning" / "trials")
    assert len(trials) == 2 and {r["config"]["optimizer"]["_target_"] for r in trials} == {"mylion.Lion"}
    _assert_completed_with_predicted_state(trials, {"my_lion"})

    # `lr: tuned` then takes the tuned lr for the suite's own runs.
    cfg = compose_config(_suite(tmp_path / "r", "optimizers.my_lion.lr=tuned", "only=[my_lion]"),
                         str(root / "suites"))
    (run,) = resolve_all(cfg, check_data=False)
    assert run["optimizer"]["lr"] == entry["lr"]


@pytest.mark.slow
@pytest.mark.slurm
def test_runs_under_the_slurm_test_cluster(importable, slurm_cluster, tmp_path, monkeypatch):
    root, env = importable
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])  # sbatch hands the jobs this environment
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the jobs take theirs from SLURM
    run_suite(_suite(tmp_path / "r", "only=[my_lion,my_sgd]", "launcher=slurm", "launcher.cpus_per_task=1",
                     "launcher.mem_gb=1", "launcher.timeout_min=10"), config_dir=str(root / "suites"))
    _assert_completed_with_predicted_state(_runs(tmp_path / "r" / "byo"), {"my_lion", "my_sgd"})



def test_muon_style_grouping_reproduces_the_builtin_muon():
    """torch.optim.Muon from config with the README's settings steps exactly as `muon` does."""
    section = {"_target_": "torch.optim.Muon", "lr": 0.02, "weight_decay": 0.01,
               "param_groups": {"rule": "muon_style", "adamw": {"lr": 3e-4}}}
    models = {}
    for name, hparams in (("muon", {}), ("my_muon", section)):
        models[name] = model = contract.nano()
        contract.run_steps(model, optimizers.build(name, model, **hparams), 0, 3)
    contract.assert_same_params(models["muon"], models["my_muon"])


def test_a_factory_takes_no_param_groups_and_a_class_gets_nanogpts_groups_by_default(importable):
    model = contract.nano()
    with pytest.raises(optimizers.SpecError, match=r"^param_groups=no_decay: mylion.build is a factory"):
        optimizers.build("my_sgd", model, _target_="mylion.build", lr=1e-2, param_groups="no_decay")
    opt = optimizers.build("my_lion", model, _target_="mylion.Lion", lr=1e-3)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.0]  # the class's own default
    assert [len(g["params"]) for g in opt.param_groups] == [
        sum(p.dim() >= 2 for p in model.parameters()), sum(p.dim() < 2 for p in model.parameters())]


def test_state_falls_back_to_a_real_step_on_the_cpu_when_the_meta_device_cannot_step(monkeypatch):
    class Reads(torch.optim.SGD):  # reads a value, which a meta tensor has not
        def step(self, closure=None):
            float(self.param_groups[0]["params"][0].grad.sum())
            return super().step(closure)

    spec = optimizers.OptimizerSpec(name="reads", build=lambda model, lr: Reads(model.parameters(), lr=lr,
                                                                                 momentum=0.9),
                                    defaults=dict(lr=1e-2))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    optimizers.register(spec)
    model = contract.nano()
    state, how = optimizers.predict_state("reads", planning.meta_model(
        {"name": "nano", "n_layer": 2, "n_embd": 64, "block_size": 32}))
    assert how.startswith("one real step on the CPU (none on the meta device: ")
    opt = optimizers.build("reads", model)
    contract.run_steps(model, opt, 0, 1)
    assert state == optimizers.state_bytes(opt)


def _site(root: Path) -> Path:
    """A plugin distribution installed as pip installs one: a dist-info folder (its metadata and
    entry points) beside its module, in a folder on the path; and a broken one beside it."""
    site = root / "site"
    (site / "optarena_plug-1.0.dist-info").mkdir(parents=True)
    (site / "optarena_plug-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: optarena-plug\nVersion: 1.0\n")
    (site / "optarena_plug-1.0.dist-info" / "entry_points.txt").write_text(textwrap.dedent("""\
        [optarena.optimizers]
        plug = plugmod
        plug_more = plugmod:more
        """))
    (site / "plugmod.py").write_text(PLUGIN)
    (site / "optarena_broken-0.1.dist-info").mkdir()
    (site / "optarena_broken-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: optarena-broken\nVersion: 0.1\n")
    (site / "optarena_broken-0.1.dist-info" / "entry_points.txt").write_text(
        "[optarena.optimizers]\nbroken = no_such_module_here\n")
    return site


def test_an_installed_plugins_optimizers_appear_by_name_and_run(tmp_path, monkeypatch):
    site = _site(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    helped = _cli("runners.suite", "--help", env=env, cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    group = next(line for line in helped.stdout.splitlines() if line.startswith("optimizer: "))
    assert "plug_rmsprop" in group and "plug_sgd" in group
    assert helped.stderr.strip().splitlines() == [
        "warning: optimizer plugin 'broken' (no_such_module_here from optarena-broken) failed to load "
        "(ModuleNotFoundError: No module named 'no_such_module_here'); its optimizers are not available"]

    out = _cli("runners.train", "optimizer=plug_sgd", *SHORT, f"results_dir={tmp_path / 'r'}",
               env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (info,) = _runs(tmp_path / "r" / "adhoc")
    assert info["status"] == "completed" and info["config"]["optimizer"]["momentum"] == 0.9

    # What the plan predicts for it here, with the plugin loaded as `optimizers` loads it.
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    from optimizers import plugins

    plugins.load()
    assert {"plug_sgd", "plug_rmsprop"} <= set(optimizers.names())
    assert info["summary"]["opt_state_bytes"] == planning.estimate(info["config"], "cpu").state > 0
