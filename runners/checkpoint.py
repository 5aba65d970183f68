"""Checkpoints: everything needed to continue a run bit for bit.

Model and optimizer state, every RNG, and the run's progress counters. The data position and
the lr schedule are pure functions of the step, so the step is all they need.

One process or DDP: rank 0 writes one file, `ckpt/state.pt`, atomically. FSDP2: every rank
writes its own shards with torch.distributed.checkpoint into `ckpt/dcp-<step>/`, and rank 0 then
points `ckpt/fsdp.json` at it (the commit point: a job killed mid-save keeps the previous one).
"""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import torch
import torch.distributed as dist

from runners.parallel import World
from runners.run_folder import RunFolder, atomic_file, atomic_write

STATE_FILE = "state.pt"
FSDP_POINTER = "fsdp.json"


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(folder: RunFolder, model, opt, progress: dict, world: World = World(), sharded=False) -> None:
    if sharded:
        _save_sharded(folder, model, opt, progress, world)
    elif world.is_main:
        # Streamed to the file: a buffer in memory first would double the host memory a large
        # model's checkpoint takes (weights + optimizer state, 17 GiB for gpt2_xl with AdamW).
        with atomic_file(folder.ckpt_dir / STATE_FILE) as f:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "progress": progress, "rng": rng_state()}, f)
    if world.distributed:
        dist.barrier()


def load(folder: RunFolder, model, opt, sharded=False) -> dict | None:
    """Restore a checkpoint if the run has one; returns its progress counters."""
    if sharded:
        return _load_sharded(folder, model, opt)
    path = folder.ckpt_dir / STATE_FILE
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    return state["progress"]


def _save_sharded(folder: RunFolder, model, opt, progress: dict, world: World) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    target = folder.ckpt_dir / f"dcp-{progress['step']}"
    model_sd, optim_sd = get_state_dict(model, opt)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(target))
    dist.barrier()
    if world.is_main:
        pointer = folder.ckpt_dir / FSDP_POINTER
        old = json.loads(pointer.read_text())["dir"] if pointer.exists() else None
        with atomic_file(folder.ckpt_dir / "rng.pt") as f:
            torch.save(rng_state(), f)
        atomic_write(pointer, json.dumps({"dir": target.name, "progress": progress}))
        if old and old != target.name:
            shutil.rmtree(folder.ckpt_dir / old, ignore_errors=True)


def _load_sharded(folder: RunFolder, model, opt) -> dict | None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    pointer = folder.ckpt_dir / FSDP_POINTER
    if not pointer.exists():
        return None
    saved = json.loads(pointer.read_text())
    model_sd, optim_sd = get_state_dict(model, opt)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(folder.ckpt_dir / saved["dir"]))
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    set_rng_state(torch.load(folder.ckpt_dir / "rng.pt", weights_only=False))
    return saved["progress"]
