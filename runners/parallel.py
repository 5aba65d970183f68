"""Data parallelism for a run: nothing, DDP, or FSDP2, chosen by `train.parallel`.

The process group comes from the environment torchrun (or submitit under SLURM) sets: RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT. gloo on CPU, NCCL on CUDA. Each rank takes its slice
of the same global batch, so the optimizer sees the same averaged gradient at any world size.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

PARALLEL = ("ddp", "fsdp")  # train.parallel; one process is never wrapped


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                 int(os.environ.get("LOCAL_RANK", 0)))


def init(world: World, device: torch.device) -> None:
    if world.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                rank=world.rank, world_size=world.size)


def shutdown(clean: bool = True) -> None:
    """`clean`: every rank got here without an error, so they can leave together. A rank
    that tears its gloo pairs down while a peer still reads from them can abort the peer
    ("terminate called without an active exception"); after an error a barrier could wait
    on a peer stuck in another collective, so that rank just leaves."""
    if dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def wrap(model: nn.Module, kind: str, world: World) -> nn.Module:
    """The module the loop calls forward on; `model` itself keeps its parameters (sharded
    in place under FSDP2, so the optimizer built on `model` sees DTensors)."""
    if not world.distributed:
        return model
    if kind == "ddp":
        return nn.parallel.DistributedDataParallel(model)
    from torch.distributed.fsdp import fully_shard

    for block in model.h:
        fully_shard(block)
    fully_shard(model)
    return model


def grad_sync(wrapped: nn.Module, enabled: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of an accumulation."""
    if isinstance(wrapped, nn.parallel.DistributedDataParallel) and not enabled:
        return wrapped.no_sync()
    if hasattr(wrapped, "set_requires_gradient_sync"):
        wrapped.set_requires_gradient_sync(enabled)
    return nullcontext()


def all_reduce_(t: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=op)
    return t


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is true on any: ranks must agree to stop at the same step."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([int(flag)], device=device)
    return bool(all_reduce_(t, dist.ReduceOp.MAX).item())


def clip_grad_norm_(params: list[nn.Parameter], max_norm: float | None) -> torch.Tensor:
    """The global gradient norm (a 0-d tensor on the device: reading it waits for the device),
    and clipping to max_norm (None: no clipping).

    Under FSDP2 the per-shard norms come back as a partial DTensor: it must be reduced across
    ranks before the clipping coefficient is taken from it (torchtitan does the same).
    """
    grads = [p.grad for p in params if p.grad is not None]
    norm = nn.utils.get_total_norm(grads, foreach=True)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    if max_norm is not None:
        nn.utils.clip_grads_with_norm_(params, max_norm, norm, foreach=True)
    return norm
