"""The optimizers beyond the seven (Muon, SOAP, Lion, Schedule-Free AdamW, MARS, ADOPT): each steps
as the PyPI class it is (pytorch-optimizer 4.1.0; Muon: torch's Muon beside torch's AdamW) and
trains a small run through the real loop; Muon's split between Muon and AdamW and the AdamW
part's own scheduled lr; Schedule-Free's evaluation weights in every evaluation and checkpoint,
and a kill and resume that continues bit for bit; FSDP2: the element-wise ones step DTensor
shards as one process steps whole tensors (two gloo ranks), the others refuse shards. Their
state-memory predictions and state_dict round trips are in the shared contract
(test_optimizer_contract.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_optimizer as po
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import models
import optimizers
from optimizers.grouping import decay_groups
from optimizers.contract import (
    assert_same_params, differences, nano, run_steps, set_random_grads,
)
from runners.config import resolve_run, run_id
from runners.hydra_app import compose_config
from runners.train import evaluate, run
from tests.conftest import REPO, SMALL_RUN

EXTRAS = ["muon", "soap", "lion", "schedule_free_adamw", "mars", "adopt"]
TIMING = {"time_fwd_bwd_s", "time_opt_s", "tokens_per_s", "wall_time_s", "peak_mem_bytes"}


def test_the_extras_are_registered_after_the_seven():
    assert optimizers.names() == ["adamw", "adam_mini", "adafactor", "came", "sm3", "lamb",
                                  "ademamix", *EXTRAS]


def _folder(cfg: dict) -> Path:
    resolved = resolve_run(cfg)
    return Path(resolved["results_dir"]) / resolved["suite"] / run_id(resolved)


def _rows(folder: Path) -> list[dict]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def _val_losses(folder: Path) -> list[float]:
    return [r["val_loss"] for r in _rows(folder) if "val_loss" in r]


def _assert_trained(cfg: dict, info: dict) -> None:
    """Completed, the validation loss 0.3 or more below its ~5.5 at step 0 after 30 steps, and
    the state the run measured is the predicted one."""
    assert info["status"] == "completed"
    losses = _val_losses(_folder(cfg))
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.3, losses
    resolved = resolve_run(cfg)
    model = models.build_model(**resolved["model"])
    hparams = {k: v for k, v in resolved["optimizer"].items() if k != "name"}
    assert info["summary"]["opt_state_bytes"] == optimizers.predict_state_bytes(
        resolved["optimizer"]["name"], model, **hparams)


@pytest.mark.parametrize("name", ["soap", "lion", "mars", "adopt"])
def test_a_small_run_trains(small_cfg, name):
    cfg = small_cfg(f"optimizer={name}")
    _assert_trained(cfg, run(cfg))


# The pytorch-optimizer 4.1.0 class and arguments each one is, on nanoGPT's decay groups (MARS:
# one group; it splits by dimension itself). The mixin only adapts torch.optim conventions
# (optimizers/external.py), so the steps are the same to the bit.
PO_REFERENCES = {
    "lion": lambda groups: po.Lion(groups, lr=1e-4, betas=(0.9, 0.99)),
    "adopt": lambda groups: po.ADOPT(groups, lr=1e-3, betas=(0.9, 0.9999), eps=1e-6,
                                     weight_decouple=True),
    "soap": lambda groups: po.SOAP(groups, lr=3e-3, betas=(0.95, 0.95), precondition_frequency=10),
    "schedule_free_adamw": lambda groups: po.ScheduleFreeAdamW(groups, lr=2.5e-3),
    "mars": lambda groups: po.MARS([p for g in groups for p in g["params"]], lr=6e-3,
                                   weight_decay=0.01),
}


@pytest.mark.parametrize("name", PO_REFERENCES)
def test_each_steps_as_the_pytorch_optimizer_class_it_is(name):
    model, twin = nano(), nano()
    opt = optimizers.build(name, model)
    reference = PO_REFERENCES[name](
        decay_groups(twin, optimizers.spec(name).defaults["weight_decay"]))
    for step in range(12):  # past SOAP's first eigenbasis refresh (every 10)
        run_steps(model, opt, step, step + 1)
        run_steps(twin, reference, step, step + 1)
    assert_same_params(model, twin)


# ---------------------------------------------------------------- Muon

def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    torch.manual_seed(0)
    model = models.build_model("nano")
    opt = optimizers.build("muon", model)
    names = {id(p): n for n, p in model.named_parameters()}
    owners = {}
    for group in opt.param_groups:
        for p in group["params"]:
            assert names[id(p)] not in owners, "a parameter in two groups"
            owners[names[id(p)]] = group["owner"]
    assert owners.keys() == set(names.values())
    hidden = {f"h.{i}.{m}.weight" for i in range(4)
              for m in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")}
    assert {n for n, o in owners.items() if o == "muon"} == hidden
    # The embeddings (the token one is the head too: tied), the norms and every bias.
    assert model.lm_head.weight is model.wte.weight and owners["wte.weight"] == "adamw"
    assert {n for n, o in owners.items() if o == "adamw"} == set(names.values()) - hidden
    assert isinstance(opt.parts["muon"], torch.optim.Muon)
    assert isinstance(opt.parts["adamw"], torch.optim.AdamW)
    for group in opt.param_groups:
        if group["owner"] == "muon":  # follows the run's (tuned) lr
            assert "lr_base" not in group and group["lr"] == 0.02
        else:  # its own peak lr, scheduled alike
            assert group["lr_base"] == group["lr"] == 3e-4
            assert group["betas"] == (0.9, 0.95) and group["eps"] == 1e-10
            assert group["weight_decay"] == 0.01
    # A group added later goes by shape: a matrix to Muon, a vector to AdamW.
    extra = nn.Linear(8, 4)
    opt.add_param_group({"params": list(extra.parameters()), "lr": 1e-2})
    added = [(g["owner"], [id(p) for p in g["params"]])
             for g in opt.param_groups if g["lr"] == 1e-2]
    assert added == [("muon", [id(extra.weight)]), ("adamw", [id(extra.bias)])]


def test_muon_steps_as_torch_muon_and_adamw_side_by_side():
    """The composite is the two torch optimizers of Muon's README, stepped together."""
    model, twin = nano(), nano()
    opt = optimizers.build("muon", model)
    hidden_ids = {id(p) for p in opt.parts["muon"].param_groups[0]["params"]}
    hidden = [q for p, q in zip(model.parameters(), twin.parameters()) if id(p) in hidden_ids]
    rest = [q for p, q in zip(model.parameters(), twin.parameters()) if id(p) not in hidden_ids]
    parts = [torch.optim.Muon(hidden, lr=0.02, weight_decay=0.01, momentum=0.95, nesterov=True,
                              ns_steps=5),
             torch.optim.AdamW(rest, lr=3e-4, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.01)]
    for step in range(3):
        run_steps(model, opt, step, step + 1)
        set_random_grads(twin.parameters(), step)
        for part in parts:
            part.step()
    assert_same_params(model, twin)


def test_a_muon_run_schedules_muon_and_adamw_lrs_alike(small_cfg, monkeypatch):
    """Through a real run: at every step Muon's groups have the run's lr (as its metrics log
    it) and the AdamW groups the same schedule from their own lr_base."""
    seen = []
    build = optimizers.build

    def recording_build(name, model, **hparams):
        opt = build(name, model, **hparams)
        opt.parts["muon"].register_step_pre_hook(
            lambda *_: seen.append({g["owner"]: g["lr"] for g in opt.param_groups}))
        return opt

    monkeypatch.setattr(optimizers, "build", recording_build)
    cfg = small_cfg("optimizer=muon")
    _assert_trained(cfg, run(cfg))
    logged = [row["lr"] for row in _rows(_folder(cfg)) if "lr" in row]
    assert len(logged) == 30 and len(set(logged)) > 15  # warmup and decay, not a constant
    assert [s["muon"] for s in seen] == logged
    assert [s["adamw"] for s in seen] == pytest.approx([lr * 3e-4 / 0.02 for lr in logged],
                                                       rel=1e-12)


# ---------------------------------------------------------------- Schedule-Free

SF = ["optimizer=schedule_free_adamw", "train.ckpt_every=5"]


@pytest.fixture(scope="module")
def sf_straight(tmp_path_factory, shakespeare_bytes):
    """A Schedule-Free run in one go, with each evaluation's and each step's mode recorded, and
    whether the weights evaluated were the ones the last step left (the training weights)."""
    cfg = compose_config([*SMALL_RUN, *SF, f"results_dir={tmp_path_factory.mktemp('sf')}"])
    record = {"step_modes": [], "evals": []}
    build = optimizers.build

    def recording_build(name, model, **hparams):
        opt = build(name, model, **hparams)
        record["opt"] = opt
        params = list(model.parameters())

        def after_step(*_):
            record["step_modes"].append([g["train_mode"] for g in opt.param_groups])
            record["trained"] = [p.detach().clone() for p in params]

        opt.register_step_post_hook(after_step)
        record["params"] = params
        return opt

    def recording_evaluate(model, *args, **kwargs):
        trained = record.get("trained")
        swapped = trained is not None and any(
            not torch.equal(p, t) for p, t in zip(record["params"], trained))
        record["evals"].append(([g["train_mode"] for g in record["opt"].param_groups], swapped))
        return evaluate(model, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp_:
        mp_.setattr(optimizers, "build", recording_build)
        mp_.setattr("runners.train.evaluate", recording_evaluate)
        info = run(cfg)
    return cfg, info, record


def test_schedule_free_trains_and_evaluates_its_averaged_weights(sf_straight):
    cfg, info, record = sf_straight
    _assert_trained(cfg, info)
    assert record["step_modes"] == [[True, True]] * 30  # y while training
    # x for the evaluations at steps 0, 10, 20, 30 and the final test split; from step 10 on
    # they differ from the weights the last step left.
    assert [modes for modes, _ in record["evals"]] == [[False, False]] * 5
    assert [swapped for _, swapped in record["evals"]] == [False, True, True, True, True]
    # The final checkpoint holds x, and says so.
    saved = torch.load(_folder(cfg) / "ckpt" / "state.pt", weights_only=False)["optimizer"]
    assert [g["train_mode"] for g in saved["param_groups"]] == [False, False]


def test_schedule_free_resumes_exactly_after_a_kill(sf_straight, tmp_path):
    """Killed in the row of step 13 (checkpoints at 5 and 10): the resumed run ends with the rows
    and weights of the run in one go, bit for bit."""
    straight_cfg = sf_straight[0]
    results = tmp_path / "killed"
    args = [*SMALL_RUN, *SF, f"results_dir={results}"]
    killed = subprocess.run([sys.executable, "-m", "runners.train", *args], cwd=REPO,
                            env={**os.environ, "OPTARENA_FAULT": "write:metrics.jsonl@15"},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    cfg = compose_config(args)
    assert run(cfg)["status"] == "completed"
    assert _rows(_folder(cfg)) == _rows(_folder(straight_cfg))
    got, want = (torch.load(_folder(c) / "ckpt" / "state.pt", weights_only=False)
                 for c in (cfg, straight_cfg))
    assert all(torch.equal(got["model"][k], want["model"][k]) for k in want["model"])
    assert differences(got["optimizer"], want["optimizer"]) == []


# ---------------------------------------------------------------- FSDP2 (DTensor)

REFUSED = ["muon", "soap", "mars"]
ELEMENTWISE = {
    "lion": dict(lr=1e-2, weight_decay=0.5),
    "adopt": dict(lr=1e-2, weight_decay=0.1),
    "schedule_free_adamw": dict(lr=1e-2, weight_decay=0.1),
}
# Dim 0 of 7 and 1 split unevenly over two ranks; one rank holds an empty shard of the (1, 3).
SHARDED_SHAPES = [(7, 5), (5,), (1, 3), (4, 4)]


def _sharded_model(mesh=None) -> nn.Module:
    from torch.distributed.tensor import Shard, distribute_tensor

    g = torch.Generator().manual_seed(0)
    full = [torch.randn(s, generator=g, dtype=torch.float64) for s in SHARDED_SHAPES]
    shard = (lambda t: distribute_tensor(t, mesh, [Shard(0)])) if mesh else (lambda t: t)
    return nn.ParameterList(nn.Parameter(shard(t)) for t in full)


def test_the_others_refuse_sharded_parameters(tmp_path):
    from torch.distributed.device_mesh import init_device_mesh

    assert set(REFUSED) | set(ELEMENTWISE) == set(EXTRAS)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        model = _sharded_model(init_device_mesh("cpu", (1,)))
        for name in REFUSED:
            with pytest.raises(ValueError) as excinfo:
                optimizers.build(name, model)
            message = str(excinfo.value)
            assert f"optimizer {name!r}" in message and "use train.parallel=ddp" in message, message
    finally:
        dist.destroy_process_group()


def _train(name: str, mesh=None):
    from torch.distributed.tensor import Shard, distribute_tensor

    model = _sharded_model(mesh)
    opt = optimizers.build(name, model, **ELEMENTWISE[name])
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        for p in model:
            grad = torch.randn(p.shape, generator=g, dtype=torch.float64)
            p.grad = distribute_tensor(grad, mesh, [Shard(0)]) if mesh else grad
        opt.step()
    return model, opt


def _sharded_worker(rank: int, store_path: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor

    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2)
    try:
        mesh = init_device_mesh("cpu", (2,))
        for name in ELEMENTWISE:
            model, opt = _train(name, mesh)
            single, single_opt = _train(name)
            switches = ["eval", "train"] if name == "schedule_free_adamw" else []
            for switch in [None, *switches]:  # Schedule-Free's evaluation weights too
                if switch:
                    getattr(opt, switch)()
                    getattr(single_opt, switch)()
                for p, q in zip(model, single):
                    torch.testing.assert_close(p.full_tensor(), q.detach(), rtol=1e-12, atol=1e-14)
            # State stays DTensor (a DCP checkpoint needs it) and is counted per shard.
            assert all(isinstance(v, DTensor) for s in opt.state.values() for v in s.values()
                       if isinstance(v, torch.Tensor))
            assert optimizers.state_bytes(opt) == optimizers.predict_state_bytes(
                name, model, **ELEMENTWISE[name])
        dist.barrier()  # leave together: see runners.parallel.shutdown
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_the_elementwise_ones_step_shards_as_one_process_steps_whole_tensors(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two workers on a small machine
    mp.spawn(_sharded_worker, args=(str(tmp_path / "store"),), nprocs=2, join=True)


# ---------------------------------------------------------------- SOAP's state beyond nano's

def test_soap_predicts_its_state_past_max_precondition_dim_and_for_vectors():
    """GPT-2's 50304-row embedding keeps the identity on that dim (too costly to precondition on
    a CPU at 124M, so shown on nano with a lower cap), and vectors preconditioned on request."""
    torch.manual_seed(0)
    model = models.build_model("nano")
    hparams = dict(max_precondition_dim=200, precondition_1d=True)
    opt = optimizers.build("soap", model, **hparams)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 0.01
    opt.step()
    assert [len(m) for m in opt.state[model.wte.weight]["GG"]] == [0, 128]  # 256 rows > 200
    assert optimizers.state_bytes(opt) == optimizers.predict_state_bytes("soap", model, **hparams)
