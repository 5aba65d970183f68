"""`train.compile_step`: the optimizer's whole `step()` through torch.compile, as torch's docs
compile an optimizer, equal to the eager step within floating-point tolerance
(tests/test_compiled_step.py).

A step compiled once must not be compiled again at the next step. Three things see to it:

- the lr: the loop sets a new Python float in every param group at every step, and a float read
  from an optimizer's param groups is baked into the graph (one compile per step). For the call,
  each group holds it in a 0-d float32 CPU tensor instead, and gets the float back after, so that
  checkpoints are those of the eager step. float32, because a float64 lr read from a tensor is
  baked in just the same (torch 2.13); rounded to float32, the lr moves by 6e-8 relative at most;
- numbers the step reads from tensors (`float(group["lr"])` in our optimizers, Adafactor's step
  counts) are traced into the graph (`capture_scalar_outputs`) instead of splitting it;
- a fresh optimizer's first step, which creates its state, runs eagerly: traced, it would be a
  second graph, run once.

torch's foreach kernels take no tensor lr off CUDA: such groups use torch's single-tensor loop for
the call, which the compiler fuses the same way (its numbers are the foreach ones: optimizers/
adamw.py). A fused group (torch's AdamW on CUDA) is already one kernel per step and steps eagerly.

Only optimizers whose compiled step is checked against the eager one take the key (CHECKED); the
others are refused, with the reason where one is known (NOT_COMPILABLE).
"""

from __future__ import annotations

import torch

# The optimizers tests/test_compiled_step.py checks compiled: one graph, the eager numbers.
CHECKED = ("adamw", "adafactor", "came", "sm3", "lamb")

# Measured with torch 2.13 on the CPU: each of these compiles a new graph at every step (a step
# took seconds until dynamo's limit of 8 recompiles, then ran eagerly).
NOT_COMPILABLE = {
    "adam_mini": "its step counts are Python ints, and the per-block step sizes made from them are "
                 "lists of Python floats, which the compiler bakes into the graph (as it does its "
                 "`lr != 0` test): a new graph at every step",
    "ademamix": "its step counts are Python ints, and the bias corrections, alpha and beta3 made from "
                "them are Python floats, which the compiler bakes into the graph: a new graph at "
                "every step",
}


def why_not(optimizer: dict) -> str | None:
    """Why train.compile_step refuses this optimizer section; None when it takes it."""
    name = optimizer.get("name")
    if name in CHECKED and "_target_" not in optimizer:
        return None
    return NOT_COMPILABLE.get(name) or (
        f"its compiled step is not checked against its eager one (tests/test_compiled_step.py "
        f"checks {', '.join(CHECKED)})")


def refusal(optimizer: dict) -> list[str]:
    """The error lines for train.compile_step=true with this optimizer section (none: it takes it)."""
    why = why_not(optimizer)
    return [] if why is None else [
        f"train.compile_step=true: optimizer {optimizer.get('name')}: {why}; set train.compile_step=false"]


class CompiledStep:
    """`opt.step()` compiled; call it where the loop calls opt.step().

    Make it before anything else of the run is compiled: it clears dynamo's caches. Every
    optimizer's step runs through one code object (torch.optim's step wrapper), which dynamo
    compiles for 8 optimizers at most in a process and then runs eagerly without a word (a
    tuner's trials, bench.gpu's optimizers); the caches of earlier runs serve no later one."""

    def __init__(self, opt: torch.optim.Optimizer):
        torch._dynamo.reset()
        self.opt = opt
        self._lrs = [torch.zeros((), dtype=torch.float32) for _ in opt.param_groups]
        self._compiled = torch.compile(opt.step)

    def __call__(self) -> None:
        groups = self.opt.param_groups
        if not self.opt.state or any(g.get("fused") for g in groups):
            self.opt.step()
            return
        saved = [(g["lr"], g.get("foreach")) for g in groups]
        for g, lr in zip(groups, self._lrs):
            lr.fill_(g["lr"])
            g["lr"] = lr
            if g.get("foreach") and g["params"][0].device.type != "cuda":
                g["foreach"] = False
        try:
            with torch._dynamo.config.patch(capture_scalar_outputs=True):
                self._compiled()
        finally:
            for g, (lr, foreach) in zip(groups, saved):
                g["lr"] = lr
                if foreach is not None:
                    g["foreach"] = foreach
