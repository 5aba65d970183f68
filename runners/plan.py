"""What a run will cost before it runs: FLOPs, time on a device, and peak memory per rank.

Peak memory = weights + gradients + optimizer state (optimizers.predict_state: exact, from each
optimizer's own count or, without one, one step on a shape-identical copy of the model) +
activations of one micro-batch + communication buffers. The activation term counts what autograd
keeps per token for our GPT-2 (16 * n_embd values per layer: both layer-norm inputs and outputs,
qkv, the attention output, the residual stream, the MLP's 4x hidden before and after GELU; SDPA
keeps no T x T matrix) plus the logits, their float copy for the loss and its gradient (3 * vocab
per token).

On several ranks (runners/parallel.py) the memory is one rank's:
- ddp: the whole model, its gradients and optimizer state on every rank, and DDP's gradient
  buckets (torch's default: 25 MiB each, the first 1 MiB). They are not views of the `.grad`s, so
  whatever their size together they are a second copy of the gradients.
- fsdp: fully_shard on each block and on the root (the tied embedding and head, the position
  table, the final norm). Each parameter is cut on dim 0 as torch.chunk cuts it: every rank
  keeps ceil(rows / W) rows in a buffer of that size (the last ranks' rows are fewer, or none:
  padding), and the gradients after the reduce-scatter are shards of the same size. The
  optimizer state is counted tensor by tensor after one step on the meta device: a tensor with
  its parameter's dims and dim 0 is sharded with it (torch.zeros_like of a DTensor, a factored
  optimizer's row statistics), the rest is whole on every rank (column statistics, step
  counts, Adam-mini's v: optimizers/adam_mini.py replicates it). Rank 0 holds the most. While
  micro-batches accumulate, FSDP2 keeps every unit's gradients whole (unsharded, accumulated
  until the last micro-batch reduce-scatters them), so the gradients count whole then. The
  buffers are an upper bound of the moments of a step: the root's weights, gathered from the
  forward through the backward (FSDP2 does not reshard the root after its forward), two blocks
  gathered (the one in its backward and the one prefetched), and the largest unit's gradients
  with the reduce-scatter input they are copied into.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

import optimizers
from models import GPT, GPTConfig, build_model
from optimizers.adam_mini import AdamMini
from optimizers.contract import set_mode

# Devices a plan can be made for: (a fragment of the CUDA device name, dense bf16 peak FLOP/s
# from the vendor's datasheet, memory). `cpu` is measured instead.
DEVICES = {
    "h200": ("H200", 989e12, 141 * 2**30), "h100": ("H100", 989e12, 80 * 2**30),
    "a100": ("A100", 312e12, 80 * 2**30), "a100_40gb": ("A100", 312e12, 40 * 2**30),
    "l40s": ("L40S", 362e12, 48 * 2**30), "a10g": ("A10G", 125e12, 24 * 2**30),
    "rtx4090": ("4090", 165e12, 24 * 2**30), "v100": ("V100", 125e12, 32 * 2**30),
}
# bf16 + torch.compile GPT-2 through runners.train on one H100: AdamW measured 35% on gpt2_small,
# 33% on gpt2_xl (bench/results_h100.md)
ASSUMED_MFU = 0.35
CPU_EFFICIENCY = 0.35     # training reaches about a third of the matmul rate on CPU
# train.micro_batch=auto keeps this share of the memory free: the allocator's fragmentation, the
# CUDA context and what the estimate leaves out (bench/results_h100.md: measured peaks 0.81-0.96
# of the prediction).
MEMORY_MARGIN = 0.1


@dataclass(frozen=True)
class RankMemory:
    """What one rank holds for a run, in bytes, besides the activations."""

    weights: int
    grads: int
    state: int
    buffers: int  # DDP's gradient buckets; FSDP2's gathered units and reduce-scatter inputs
    # How the state bytes were found when not by the optimizer's own count from the shapes
    # (an optimizer from config or a plugin without one: optimizers/state_prediction.py).
    state_found_by: str | None = None


@dataclass
class Estimate:
    flops: float
    seconds: float
    weights: int  # this and every memory figure below but `checkpoint`: per rank (rank 0's)
    grads: int
    state: int
    activations: int
    buffers: int
    device_memory: int
    # Bytes a run's checkpoint keeps on disk, however sharded: the whole model's weights and
    # optimizer state (the final one stays after the run, for audits and resumption).
    checkpoint: int
    micro_batch: int
    state_found_by: str | None = None

    @property
    def peak(self) -> int:
        return self.weights + self.grads + self.state + self.activations + self.buffers

    @property
    def fits(self) -> bool:
        return self.peak <= self.device_memory


def meta_model(model_cfg: dict) -> GPT:
    """A model of these shapes on the meta device (no memory). One per shape, shared: a suite's
    plan estimates every run, and each build initialises every weight (about 25 ms for a nano
    model), while nothing here changes it."""
    return _meta_model(json.dumps(model_cfg, sort_keys=True))


@lru_cache(maxsize=None)
def _meta_model(key: str) -> GPT:
    with torch.device("meta"):
        return build_model(**json.loads(key))


def activation_bytes(cfg: GPTConfig, micro_batch: int, seq_len: int, half: bool) -> int:
    tokens = micro_batch * seq_len
    per_value = 2 if half else 4  # bf16 autocast (CUDA), or fp32
    body = cfg.n_layer * 16 * cfg.n_embd * per_value
    head = cfg.vocab_size * (per_value + 4 + 4)  # logits, their fp32 copy, its gradient
    return tokens * (body + head)


_cpu_flops: float | None = None


def cpu_flops() -> float:
    """This machine's fp32 matmul rate, measured once (about 0.2 s)."""
    global _cpu_flops
    if _cpu_flops is None:
        a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
        a @ b
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < 0.2:
            a @ b
            n += 1
        _cpu_flops = n * 2 * 1024**3 / (time.perf_counter() - start)
    return _cpu_flops


def peak_flops(cuda_device_name: str) -> float | None:
    """The dense bf16 peak of a CUDA device, by its name; None when it is not in DEVICES."""
    return next((peak for fragment, peak, _ in DEVICES.values() if fragment in cuda_device_name), None)


def device_of(name: str) -> tuple[float, int]:
    """(sustained FLOP/s, memory bytes) of a device name: `cpu`, `cuda` (the visible GPU) or a DEVICES key."""
    if name == "cpu":
        import psutil

        return cpu_flops() * CPU_EFFICIENCY, psutil.virtual_memory().total
    if name == "cuda":
        props = torch.cuda.get_device_properties(0)
        return (peak_flops(props.name) or DEVICES["a100"][1]) * ASSUMED_MFU, props.total_memory
    if name not in DEVICES:
        raise ValueError(f"unknown plan device {name!r}: choose cpu, cuda or one of {', '.join(DEVICES)}")
    _, peak, memory = DEVICES[name]
    return peak * ASSUMED_MFU, memory


def estimate(cfg: dict, device: str, world_size: int = 1) -> Estimate:
    """The cost of one resolved run on `device` (per rank for memory; whole run for time)."""
    model = meta_model(cfg["model"])
    b = cfg["budget"]
    # A cooldown branch trains from its parent's checkpoint: only its own steps cost.
    start = cfg["branch"]["from_step"] if cfg.get("branch") else 0
    evals = b["steps"] // b["eval_every"] - start // b["eval_every"] + (start == 0)
    trained = (b["steps"] - start) * b["global_batch"] * b["seq_len"]
    # Training is 3 passes (forward + 2x backward) per token; evaluation is the forward only.
    flops = model.flops_per_token(b["seq_len"]) * (trained + evals * cfg["data"]["val_tokens"] / 3)
    rate, memory = device_of(device)
    micro = cfg["train"].get("micro_batch") or b["global_batch"] // world_size
    mem = run_memory(cfg, model, world_size, micro)
    whole_state = mem.state if parallel_kind(cfg, world_size) != "fsdp" else \
        optimizers.predict_state(cfg["optimizer"]["name"], model, **_hparams(cfg["optimizer"]))[0]
    return Estimate(
        flops=flops, seconds=flops / (rate * world_size), weights=mem.weights, grads=mem.grads,
        state=mem.state, activations=activation_bytes(model.config, micro, b["seq_len"], half_activations(cfg, device)),
        buffers=mem.buffers, device_memory=memory, checkpoint=_bytes(model.parameters()) + whole_state,
        micro_batch=micro, state_found_by=mem.state_found_by,
    )


def micro_batches_that_fit(cfg: dict, world_size: int, memory: float, half: bool) -> tuple[list[int], int]:
    """(the micro-batches that divide the per-rank batch and whose predicted peak per rank fits in
    (1 - MEMORY_MARGIN) x `memory` bytes, largest first; the predicted peak at a micro-batch of 1)."""
    model = meta_model(cfg["model"])
    local = cfg["budget"]["global_batch"] // world_size
    fit, peak = [], 0
    for micro in (d for d in range(local, 0, -1) if local % d == 0):
        mem = run_memory(cfg, model, world_size, micro)
        peak = mem.weights + mem.grads + mem.state + mem.buffers + activation_bytes(
            model.config, micro, cfg["budget"]["seq_len"], half)
        if peak <= (1 - MEMORY_MARGIN) * memory:
            fit.append(micro)
    return fit, peak


def probe_cuda(cfg: dict, candidates: list[int], index: int, memory: float) -> int | None:
    """The first of `candidates` (largest first) whose real step on CUDA device `index` peaks within
    (1 - MEMORY_MARGIN) x `memory` bytes: one micro-batch's forward and backward under the run's
    autocast, then the optimizer's step (so its state is there), eagerly, on a model of the run's
    shapes that the run never sees. None when none does. For one process (a rank's share under
    DDP or FSDP2 is the planner's alone). Untested where no GPU is lent."""
    device = torch.device("cuda", index)
    b, half = cfg["budget"], cfg["train"]["dtype"] != "float32"
    with torch.random.fork_rng(devices=[device]):
        model = build_model(**cfg["model"]).to(device)
        opt = optimizers.build(cfg["optimizer"]["name"], model, **_hparams(cfg["optimizer"]))
        try:
            for micro in candidates:
                torch.cuda.reset_peak_memory_stats(device)
                try:
                    x = torch.randint(cfg["model"]["vocab_size"], (micro, b["seq_len"]), device=device)
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=half):
                        _, loss = model(x, x)
                    loss.backward()
                    opt.step()
                    if torch.cuda.max_memory_allocated(device) <= (1 - MEMORY_MARGIN) * memory:
                        return micro
                except torch.OutOfMemoryError:
                    pass
                opt.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
            return None
        finally:
            del model, opt
            torch.cuda.empty_cache()


def half_activations(cfg: dict, device: str) -> bool:
    """Whether a run keeps its activations in bf16 on `device` (a GPU, under autocast)."""
    return device != "cpu" and cfg["train"]["dtype"] != "float32"


def parallel_kind(cfg: dict, world_size: int) -> str | None:
    """train.parallel where it applies: several processes (runners.parallel.wrap)."""
    return cfg["train"]["parallel"] if world_size > 1 else None


def memory_note(cfg: dict, world_size: int) -> str | None:
    """The plan's line saying what its memory column counts on several ranks."""
    kind = parallel_kind(cfg, world_size)
    if kind == "ddp":
        return (f"memory is per rank: ddp keeps the whole model, its gradients and optimizer state on each of "
                f"the {world_size} ranks, plus its gradient buckets (a second copy of the gradients)")
    if kind == "fsdp":
        return (f"memory is per rank (rank 0's): fsdp shards weights, gradients and optimizer state over "
                f"{world_size} ranks (gradients stay whole while micro-batches accumulate), plus the gathered "
                "units and reduce-scatter buffers")
    return None


def _hparams(optimizer: dict) -> dict:
    return {k: v for k, v in optimizer.items() if k != "name"}


def run_memory(cfg: dict, model: nn.Module, world_size: int, micro: int) -> RankMemory:
    """Rank 0's bytes for the run `cfg` at `micro` sequences per forward pass, activations aside."""
    accumulating = micro < cfg["budget"]["global_batch"] // world_size
    return rank_memory(model, cfg["optimizer"], parallel_kind(cfg, world_size), world_size, 0, accumulating)


def rank_memory(model: nn.Module, optimizer: dict, parallel: str | None, world_size: int, rank: int = 0,
                accumulating: bool = False) -> RankMemory:
    """What `rank` holds for `model` (on the meta device) and `optimizer` (a run's resolved
    optimizer section) under `parallel` (None: one process); the module docstring says how."""
    params = list(model.parameters())
    grads = [p for p in params if p.requires_grad]
    if parallel != "fsdp":
        state, found_by = optimizers.predict_state(optimizer["name"], model, **_hparams(optimizer))
        return RankMemory(weights=_bytes(params), grads=_bytes(grads), state=state,
                          buffers=_bytes(grads) if parallel == "ddp" else 0, state_found_by=found_by)
    blocks, root = fsdp_units(model)
    gathered = [world_size * sum(shard_bytes(p, world_size) for p in unit) for unit in [*blocks, root]]
    state, found_by = sharded_state(model, optimizer, world_size, rank)
    return RankMemory(
        weights=sum(shard_bytes(p, world_size) for p in params),
        grads=_bytes(grads) if accumulating else sum(shard_bytes(p, world_size) for p in grads),
        state=state, buffers=gathered[-1] + 2 * max(gathered[:-1], default=0) + 2 * max(gathered),
        state_found_by=found_by)


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def fsdp_units(model: nn.Module) -> tuple[list[list[nn.Parameter]], list[nn.Parameter]]:
    """(each block's parameters, the root's): the units runners.parallel.wrap shards."""
    blocks = [list(block.parameters()) for block in model.h]
    inner = {id(p) for unit in blocks for p in unit}
    return blocks, [p for p in model.parameters() if id(p) not in inner]


def shard_rows(rows: int, world_size: int, rank: int) -> int:
    """Rows of a dim-0 cut that `rank` holds: torch.chunk's, as fully_shard cuts (ceil(rows / W)
    each; the last ranks may hold fewer, or none)."""
    per = -(-rows // world_size)
    return max(0, min(per, rows - rank * per))


def shard_bytes(t: torch.Tensor, world_size: int, rank: int = 0) -> int:
    """Bytes of `rank`'s dim-0 shard of t. Rank 0's is the largest: the size FSDP2 allocates on
    every rank (the rest is padding)."""
    rows, per_row = _rows(t.shape)
    return shard_rows(rows, world_size, rank) * per_row * t.element_size()


def _rows(shape: torch.Size) -> tuple[int, int]:
    """(dim 0, elements per dim-0 row) of a shape; a scalar is one row of one."""
    return (shape[0], math.prod(shape[1:])) if len(shape) else (1, 1)


def sharded_state(model: nn.Module, optimizer: dict, world_size: int, rank: int) -> tuple[int, str | None]:
    """(`rank`'s optimizer state bytes under FSDP2 on `world_size` ranks, how they were found
    when not by one step on the meta device)."""
    try:
        layout = _state_layout(model, optimizer)
    except Exception as e:  # the optimizer's own code: whatever it raises, the weights' share is taken
        state, how = optimizers.predict_state(optimizer["name"], model, **_hparams(optimizer))
        params = list(model.parameters())
        share = sum(shard_bytes(p, world_size, rank) for p in params) / _bytes(params)
        why = f"{type(e).__name__}: {str(e).strip().splitlines()[0]}" if str(e).strip() else type(e).__name__
        return round(state * share), (f"the whole state ({how or 'its own count'}) x this rank's share of the "
                                      f"weights, with no step on the meta device ({why})")
    total = 0
    for rows, tensors in layout:
        for shape, size, sharded in tensors:
            held_rows = shard_rows(rows, world_size, rank) if sharded else _rows(shape)[0]
            total += held_rows * _rows(shape)[1] * size
    return total, None


# optimizer section + model shapes -> per parameter: its rows, and each state tensor's shape,
# bytes per element and whether FSDP2 shards it with the parameter. One meta step per kind of
# run, whatever the world size or rank.
_state_layouts: dict[str, list[tuple[int, list[tuple[torch.Size, int, bool]]]]] = {}


def _state_layout(model: nn.Module, optimizer: dict) -> list[tuple[int, list[tuple[torch.Size, int, bool]]]]:
    shapes = [(n, list(p.shape), str(p.dtype), p.requires_grad) for n, p in model.named_parameters()]
    key = json.dumps([optimizer, shapes], sort_keys=True, default=str)
    if key not in _state_layouts:
        opt = optimizers.build(optimizer["name"], model, **_hparams(optimizer))
        set_mode(opt, "train")  # as the loop does before its first step
        for p in model.parameters():
            if p.requires_grad:
                p.grad = torch.full_like(p, 1e-3)
        opt.step()
        # Adam-mini keeps v (a value per block) whole on every rank, also where it has its
        # parameter's shape (a bias: a block per element).
        whole = ("v",) if isinstance(opt, AdamMini) else ()
        _state_layouts[key] = [
            (_rows(p.shape)[0], [(t.shape, t.element_size(), k not in whole and _keeps_rows(t, p))
                                 for k, t in _state_tensors(opt.state[p])])
            for p in opt.state]
    return _state_layouts[key]


def _keeps_rows(t: torch.Tensor, p: torch.Tensor) -> bool:
    """A state tensor with its parameter's dims and dim 0: FSDP2 shards it as the parameter."""
    return t.dim() == p.dim() >= 1 and t.shape[0] == p.shape[0]


def _state_tensors(state: dict):
    """(key, tensor) for every tensor of one parameter's state, lists of them included (SOAP)."""
    for k, v in state.items():
        for t in v if isinstance(v, (list, tuple)) else [v]:
            if isinstance(t, torch.Tensor):
                yield k, t


def text_table(rows: list[tuple]) -> str:
    """Rows (the first a header) as left-aligned columns for the terminal."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def human_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 3 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"
