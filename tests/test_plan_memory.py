"""Per-rank memory: `make plan`'s prediction (runners/plan.py) against real gloo ranks.

Each rank wraps the model as a run does (runners.parallel.wrap: DDP, or FSDP2 on each block and
the root) and steps as the loop does (runners.parallel.grad_sync over the micro-batches). What a
rank holds is counted exactly: its shards' bytes (numel x element size), the storage FSDP2
allocates for them (padded to ceil(rows / W) rows), the gradients just before the optimizer
steps, the optimizer state after it (optimizers.state_bytes), DDP's gradient buckets (its
logging data) and, between micro-batches that do not sync, the whole gradients FSDP2 keeps.
Each equals the prediction exactly, on every rank. The peak is taken from the profiler's record
of every CPU allocation during a later step's forward and backward, on top of what lives before
it (weights, state, buckets).

The model's sizes are odd so that the shards are uneven: on 4 ranks qkv's 135 rows are split
34/34/34/33 and the 9-row position table 3/3/3/0 (rank 3 holds padding only). One pair of
process groups (2 ranks, then 4) measures every case; the tests read the results.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import optimizers
from models import build_model, model_config
from optimizers import registry
from runners import parallel
from runners import plan as planning

MODEL = {"name": "nano", **model_config("nano", vocab_size=67, block_size=9, n_layer=2, n_head=3,
                                        n_embd=45).__dict__}
GLOBAL_BATCH, LR = 8, 1e-2
# AdamW; Adam-mini (its v, one value per block, whole on every rank even where it has its
# parameter's shape: the biases); the factored ones, whose row statistics are sharded with the
# parameter and column statistics are not.
NAMES = ["adamw", "adam_mini", "adafactor", "sm3"]
CASES = [(kind, name, accumulate) for kind in ("ddp", "fsdp") for name in NAMES for accumulate in (False, True)
         if kind == "fsdp" or name in ("adamw", "adam_mini")]
PEAKS = [(kind, name) for kind in ("ddp", "fsdp") for name in ("adamw", "adam_mini")]


def _batch(step: int, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    tokens = torch.randint(MODEL["vocab_size"], (GLOBAL_BATCH, MODEL["block_size"] + 1), generator=gen)[rows]
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _bytes(tensors) -> int:
    return sum(_local(t).numel() * _local(t).element_size() for t in tensors)


def _storage(tensors) -> int:
    """Bytes of the distinct storages under `tensors` (FSDP2's gradients of one unit share one)."""
    seen = {}
    for t in tensors:
        s = _local(t).untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def _forward_backward(wrapped, step: int, rows: slice, micro: int, between=None) -> None:
    """One step's micro-batches as runners.train runs them; `between()` after each that does not sync."""
    x, y = _batch(step, rows)
    for i in range(0, len(x), micro):
        with parallel.grad_sync(wrapped, i + micro >= len(x)):
            _, loss = wrapped(x[i:i + micro], y[i:i + micro])
            (loss * (micro / len(x))).backward()
        if between is not None and i + micro < len(x):
            between()


def _allocated_peak(fn) -> int:
    """The most bytes `fn` holds at once beyond what lived before it, from the profiler's record
    of every CPU allocation and free (a free of a block from before it is not recorded, so the
    figure can only be too high)."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = []

    def walk(nodes):
        for node in nodes:
            if node.tag == _EventType.Allocation:
                events.append((node.start_time_ns, node.extra_fields.alloc_size))
            walk(node.children)

    walk(prof.profiler.kineto_results.experimental_event_tree())
    held = peak = 0
    for _, size in sorted(events):
        held += size
        peak = max(peak, held)
    return peak


def _unsharded_grads(model) -> int:
    """Bytes of the whole gradients FSDP2 keeps between micro-batches that do not sync: on each
    unsharded parameter (moved aside only to be upcast to another reduce dtype)."""
    grads = [fp.unsharded_accumulated_grad if fp.unsharded_accumulated_grad is not None else fp._unsharded_param.grad
             for m in model.modules() if hasattr(m, "_get_fsdp_state")
             for fp in m._get_fsdp_state()._fsdp_param_group.fsdp_params]
    return _bytes(g for g in grads if g is not None)


def _measure(kind: str, name: str, accumulate: bool, world: parallel.World) -> dict:
    torch.manual_seed(0)
    model = build_model(**MODEL)
    wrapped = parallel.wrap(model, kind, world)
    params = list(model.parameters())  # the shards: taken before a forward (see runners.train)
    opt = optimizers.build(name, model, lr=LR)
    local = GLOBAL_BATCH // world.size
    rows = slice(world.rank * local, (world.rank + 1) * local)
    micro = local // 2 if accumulate else local
    out = {"weights": _bytes(params), "weights_storage": _storage(params)}
    if kind == "ddp":
        out["buckets"] = sum(int(b) for b in wrapped._get_ddp_logging_data()["bucket_sizes"].split(", "))

    def between():
        out.setdefault("grads", _unsharded_grads(model) if kind == "fsdp" else _bytes(p.grad for p in params))

    _forward_backward(wrapped, 0, rows, micro, between)
    if not accumulate:
        out["grads"], out["grads_storage"] = _bytes(p.grad for p in params), _storage(p.grad for p in params)
    opt.step()
    opt.zero_grad(set_to_none=True)
    out["state"] = optimizers.state_bytes(opt)
    if not accumulate and (kind, name) in PEAKS:
        _forward_backward(wrapped, 1, rows, micro)  # DDP rebuilds its buckets in its second step
        opt.step()
        opt.zero_grad(set_to_none=True)
        live = out["weights_storage"] + out.get("buckets", 0) + _storage(
            t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor))
        out["peak"] = live + _allocated_peak(lambda: _forward_backward(wrapped, 2, rows, micro))
        out["peak_step"] = live + _storage(p.grad for p in params) + _allocated_peak(opt.step)
    return out


def _worker(rank: int, world_size: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    world = parallel.World(rank, world_size, rank)
    parallel.init(world, torch.device("cpu"))
    results = {case: _measure(*case, world) for case in CASES}
    per_rank = [None] * world_size
    dist.all_gather_object(per_rank, results)
    if rank == 0:
        torch.save(per_rank, os.path.join(folder, "measured.pt"))
    parallel.shutdown()


@pytest.fixture(scope="module", params=[2, 4], ids=lambda w: f"{w}ranks")
def measured(request, tmp_path_factory):
    """(world size, per rank: case -> what that rank measured)."""
    world_size = request.param
    folder = str(tmp_path_factory.mktemp(f"ranks{world_size}"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Forked, not spawned: the ranks start in a blink instead of importing torch again each
    # (this process runs torch with one thread, so a fork inherits no busy thread pool).
    mp.start_processes(_worker, args=(world_size, port, folder), nprocs=world_size, join=True,
                       start_method="fork")
    return world_size, torch.load(os.path.join(folder, "measured.pt"))


def _predicted(case: tuple, world_size: int, rank: int) -> planning.RankMemory:
    kind, name, accumulate = case
    return planning.rank_memory(planning.meta_model(MODEL), {"name": name, **optimizers.resolve_hparams(name, lr=LR)},
                                kind, world_size, rank, accumulate)


def test_uneven_shards_leave_the_last_rank_padding_only():
    assert [planning.shard_rows(9, 4, r) for r in range(4)] == [3, 3, 3, 0]
    assert [planning.shard_rows(135, 4, r) for r in range(4)] == [34, 34, 34, 33]
    assert [planning.shard_rows(135, 2, r) for r in range(2)] == [68, 67]


@pytest.mark.parametrize("case", CASES, ids=["-".join(map(str, c)).replace("True", "accumulating")
                                             .replace("-False", "") for c in CASES])
def test_each_rank_holds_the_predicted_bytes(measured, case):
    world_size, per_rank = measured
    model = planning.meta_model(MODEL)
    kind, _, accumulate = case
    for rank, results in enumerate(per_rank):
        got, want = results[case], _predicted(case, world_size, rank)
        where = f"rank {rank} of {world_size}"
        assert got["state"] == want.state, where
        assert got["weights_storage"] == want.weights, where  # padded to rank 0's rows on every rank
        if kind == "ddp":
            assert got["weights"] == want.weights and got["buckets"] == want.buffers == want.grads, where
        else:  # the shard itself: torch.chunk's rows of this rank
            assert got["weights"] == sum(planning.shard_bytes(p, world_size, rank) for p in model.parameters())
        if accumulate:  # whole while micro-batches accumulate, under DDP and FSDP2 alike
            assert got["grads"] == want.grads == sum(p.numel() * 4 for p in model.parameters()), where
        else:
            assert got["grads_storage"] == want.grads and got["grads"] == (
                want.grads if kind == "ddp" else got["weights"]), where
    if kind == "fsdp" and world_size == 4:  # the last rank's shards are smaller than what it allocates
        assert per_rank[-1][case]["weights"] < per_rank[-1][case]["weights_storage"]


@pytest.mark.parametrize("kind,name", PEAKS)
def test_the_peak_of_a_forward_and_backward_is_within_the_prediction(measured, kind, name):
    world_size, per_rank = measured
    act = planning.activation_bytes(planning.meta_model(MODEL).config, GLOBAL_BATCH // world_size,
                                    MODEL["block_size"], half=False)
    for rank, results in enumerate(per_rank):
        got, want = results[kind, name, False], _predicted((kind, name, False), world_size, rank)
        predicted = want.weights + want.grads + want.state + want.buffers + act
        ratio = got["peak"] / predicted
        print(f"{kind} {name} rank {rank}/{world_size}: measured/predicted peak {ratio:.3f} "
              f"(forward+backward), {got['peak_step'] / predicted:.3f} (optimizer step)")
        assert 0.75 < ratio <= 1.0, (rank, got, want, act)


def test_an_optimizer_that_cannot_step_on_the_meta_device_gets_the_weights_share(monkeypatch):
    class Reads(torch.optim.SGD):  # reads a value, which a meta tensor has not
        def step(self, closure=None):
            float(self.param_groups[0]["params"][0].grad.sum())
            return super().step(closure)

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    optimizers.register(optimizers.OptimizerSpec(
        name="reads", build=lambda model, lr: Reads(model.parameters(), lr=lr, momentum=0.9), defaults=dict(lr=1e-2)))
    model = planning.meta_model(MODEL)
    whole, _ = optimizers.predict_state("reads", model)
    state, how = planning.sharded_state(model, {"name": "reads", "lr": 1e-2}, 4, 3)
    share = sum(planning.shard_bytes(p, 4, 3) for p in model.parameters()) / sum(
        p.numel() * 4 for p in model.parameters())
    assert state == round(whole * share) and 0 < state < whole
    assert how.startswith("the whole state (one real step on the CPU") and "no step on the meta device" in how
