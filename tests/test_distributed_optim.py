"""Optimizers with statistics across rows, columns or blocks under DDP and FSDP2: two gloo
processes equal one process.

The model's sizes are odd so that FSDP2's dim-0 shards are uneven and blocks straddle ranks:
qkv has 3 * 45 = 135 rows, split 68 / 67, which cuts K's second head (rows 60-74); the norm
weights (45), the position table (9 rows) and the token table (67 rows) are split unevenly too.
Everything runs in float64 (the loss included), so the tolerance is 1e-10.

One spawn runs every case (process start-up dominates); the tests read its results.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import optimizers
from models import GPT, GPTConfig

# No biases: K's bias has an exactly-zero gradient (softmax ignores a shift shared by all keys),
# so its float noise, which differs with the reduction order, would steer Adafactor's update.
CFG = GPTConfig(vocab_size=67, block_size=9, n_layer=2, n_head=3, n_embd=45, bias=False)
WORLD, BATCH, STEPS, LR = 2, 4, 3, 1e-2
# The optimizers whose statistics span a sharded dim: block, row, column or whole-tensor reductions.
NAMES = ["adam_mini", "adafactor", "came", "sm3", "lamb"]
TOL = 1e-10


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    tokens = torch.randint(CFG.vocab_size, (BATCH, CFG.block_size + 1), generator=gen)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def new_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CFG).double()


def train_step(model, opt, step: int, rows=slice(None)) -> None:
    idx, targets = (t[rows] for t in batch(step))
    opt.zero_grad(set_to_none=True)
    logits, _ = model(idx)
    F.cross_entropy(logits.reshape(-1, CFG.vocab_size), targets.reshape(-1)).backward()
    opt.step()


@torch.no_grad()
def full_params(model) -> dict[str, torch.Tensor]:
    from torch.distributed.tensor import DTensor

    return {name.removeprefix("module."): (p.full_tensor() if isinstance(p, DTensor) else p).clone()
            for name, p in model.named_parameters()}


# -- inside the two processes --------------------------------------------------------------------

def _sharded_model(mesh, seed: int = 0):
    from torch.distributed.fsdp import fully_shard

    model = new_model(seed)
    for block in model.h:
        fully_shard(block, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def _local_state(opt) -> list[dict]:
    """This rank's own optimizer state, in parameter order."""
    def local(v):
        v = v.to_local() if hasattr(v, "to_local") else v
        return v.clone() if torch.is_tensor(v) else v

    return [{k: local(v) for k, v in opt.state[p].items()}
            for g in opt.param_groups for p in g["params"]]


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return torch.equal(a, b) if torch.is_tensor(a) else a == b


def _checkpoint_round_trip(name: str, mesh, rows: slice, folder: str) -> dict:
    """Save model + optimizer with DCP, load into fresh ones: does each rank get its own state back?"""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model = _sharded_model(mesh)
    opt = optimizers.build(name, model, lr=LR)
    for step in range(2):
        train_step(model, opt, step, rows)
    saved_model, saved_opt = get_state_dict(model, opt)
    dcp.save({"model": saved_model, "optim": saved_opt}, checkpoint_id=folder)

    twin = _sharded_model(mesh, seed=1)
    twin_opt = optimizers.build(name, twin, lr=LR)
    twin_model_sd, twin_opt_sd = get_state_dict(twin, twin_opt)
    dcp.load({"model": twin_model_sd, "optim": twin_opt_sd}, checkpoint_id=folder)
    set_state_dict(twin, twin_opt, model_state_dict=twin_model_sd, optim_state_dict=twin_opt_sd)
    restored = _same(_local_state(opt), _local_state(twin_opt))

    for m, o in ((model, opt), (twin, twin_opt)):
        train_step(m, o, 2, rows)
    continued = all(torch.equal(a.to_local(), b.to_local())
                    for a, b in zip(model.parameters(), twin.parameters()))
    return {"restored": restored, "continued": continued}


def _gather(obj) -> list:
    per_rank = [None] * WORLD
    dist.all_gather_object(per_rank, obj)
    return per_rank


def _worker(rank: int, port: int, folder: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.nn.parallel import DistributedDataParallel as DDP

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    mesh = init_device_mesh("cpu", (WORLD,))
    rows = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)  # this rank's half of the batch
    results = {}
    for name in NAMES:
        for mode in ("ddp", "fsdp2"):
            model = DDP(new_model()) if mode == "ddp" else _sharded_model(mesh)
            opt = optimizers.build(name, model, lr=LR)
            for step in range(STEPS):
                train_step(model, opt, step, rows)
            results[name, mode] = full_params(model)
        round_trip = _checkpoint_round_trip(name, mesh, rows, os.path.join(folder, name))
        results[name, "dcp"] = _gather(round_trip)
    results["qkv rows"] = _gather(_sharded_model(mesh).h[0].attn.qkv.weight.to_local().shape[0])
    if rank == 0:
        torch.save(results, os.path.join(folder, "results.pt"))
    dist.barrier()  # leave together: see runners.parallel.shutdown
    dist.destroy_process_group()


# -- the tests -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def distributed(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("dist"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")  # for the spawned processes
        mp.spawn(_worker, args=(port, folder), nprocs=WORLD, join=True)
    return torch.load(os.path.join(folder, "results.pt"))


@pytest.fixture(scope="module")
def single_process():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        for name in NAMES:
            model = new_model()
            opt = optimizers.build(name, model, lr=LR)
            for step in range(STEPS):
                train_step(model, opt, step)
            out[name] = full_params(model)
    finally:
        torch.set_num_threads(threads)
    return out


def test_a_head_straddles_uneven_shards(distributed):
    first, second = distributed["qkv rows"]
    head = CFG.n_embd // CFG.n_head
    assert first != second and first + second == 3 * CFG.n_embd
    assert first % head  # rank 0's last rows are the start of a K head that continues on rank 1


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["ddp", "fsdp2"])
def test_two_processes_equal_one(distributed, single_process, name, mode):
    got, want = distributed[name, mode], single_process[name]
    start = full_params(new_model())
    assert got.keys() == want.keys()
    for key in want:
        assert not torch.equal(want[key], start[key]), key  # every tensor moved
        torch.testing.assert_close(got[key], want[key], rtol=TOL, atol=TOL, msg=key)


@pytest.mark.parametrize("name", NAMES)
def test_fsdp2_checkpoint_restores_each_ranks_own_state(distributed, name):
    assert distributed[name, "dcp"] == [{"restored": True, "continued": True}] * WORLD
