"""Checkpoints: everything needed to continue a run bit for bit.

Model and optimizer state, every RNG, and the run's progress counters. The data position and
the lr schedule are pure functions of the step, so the step is all they need.
"""

from __future__ import annotations

import io
import random

import numpy as np
import torch

from runners.run_folder import RunFolder, atomic_write

CKPT_NAME = "state.pt"


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


def save(folder: RunFolder, model: torch.nn.Module, opt: torch.optim.Optimizer, progress: dict) -> None:
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "progress": progress,
                "rng": rng_state()}, buf)
    atomic_write(folder.ckpt_dir / CKPT_NAME, buf.getvalue())


def load(folder: RunFolder, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict | None:
    """Restore a checkpoint if the run has one; returns its progress counters."""
    path = folder.ckpt_dir / CKPT_NAME
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    return state["progress"]
