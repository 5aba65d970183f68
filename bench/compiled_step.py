"""Each optimizer's step eager and compiled (`train.compile_step`), against torch's AdamW.

    python -m bench.compiled_step [--model nano] [--optimizers adamw,lamb] [--repeats 20]
                                  [--device cpu] [--threads 1]

The optimizer steps a model preset's real parameters (fp32) with fixed random gradients, first
eagerly, then through runners/compiled_step.py; each of its steps is timed right after a step of
torch's AdamW on the same parameters (fused on CUDA, foreach on the CPU), as bench/optimizer_step.py
does, so that both see the same load. Printed per optimizer: AdamW's step, the eager and compiled
steps as multiples of it, the compiled step as a multiple of the eager one, and the compile time
(its first compiled step). An optimizer that train.compile_step refuses gets no compiled time.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

import models
import optimizers
from bench.optimizer_step import TOTAL_STEPS, decay_split, interleaved
from runners import compiled_step

# The compiled step's first call compiles; one more lets caches and the allocator settle.
COMPILED_WARMUP = 1


@dataclass
class StepRow:
    name: str
    adamw_ms: float  # torch's AdamW step, median, measured beside the eager step
    eager: float  # eager step / AdamW step
    compiled: float | None  # compiled step / AdamW step (None: refused)
    compile_s: float | None
    state: float  # state bytes / AdamW's
    refused: str | None = None


def adamw_reference(model: nn.Module, cuda: bool) -> torch.optim.AdamW:
    """torch's AdamW in its fastest form on the device: the baseline every step is measured by."""
    return torch.optim.AdamW(decay_split(model, 0.1), lr=1e-3, betas=(0.9, 0.95),
                             fused=True if cuda else None, foreach=None if cuda else True)


def measure(model: nn.Module, names: list[str], repeats: int, compiled: bool = True) -> list[StepRow]:
    """Each optimizer's row: its eager step, then (`compiled`, where the key takes it) its compiled one."""
    cuda = next(model.parameters()).is_cuda
    adamw = adamw_reference(model, cuda)
    rows = []
    for name in names:
        budget = {o: TOTAL_STEPS for o in optimizers.spec(name).budget_options}
        hp = optimizers.resolve_hparams(name, **budget)
        opt = optimizers.build(name, model, **hp)
        eager, base = interleaved(opt.step, adamw.step, repeats, cuda=cuda)
        row = StepRow(name, 1e3 * base, eager / base, None, None,
                      optimizers.state_bytes(opt) / optimizers.state_bytes(adamw))
        row.refused = compiled_step.why_not({"name": name})
        if compiled and row.refused is None:
            step = compiled_step.CompiledStep(opt)  # its state exists: compiled from the first call
            start = time.perf_counter()
            step()
            if cuda:
                torch.cuda.synchronize()
            row.compile_s = time.perf_counter() - start
            fast, base = interleaved(step, adamw.step, repeats, COMPILED_WARMUP, cuda=cuda)
            row.compiled = fast / base
        rows.append(row)
        del opt
        if cuda:
            torch.cuda.empty_cache()
        print(f"  measured {name}", file=sys.stderr, flush=True)
    return rows


def step_model(preset: str, device: str, **overrides) -> nn.Module:
    """The preset's model (`overrides`: fields of its config) on `device`, with fixed random gradients."""
    torch.manual_seed(0)
    with torch.device(device):  # built where it steps: gpt2_xl's 1.5B weights initialised on the GPU
        model = models.build_model(preset, **overrides)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    return model


def print_rows(rows: list[StepRow], title: str) -> None:
    print(title)
    header = (f"{'optimizer':<11} {'AdamW ms':>9} {'eager':>7} {'compiled':>9} {'compiled/eager':>15} "
              f"{'compile s':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        compiled = "refused" if r.compiled is None else f"{r.compiled:.2f}x"
        ratio = "-" if r.compiled is None else f"{r.compiled / r.eager:.2f}x"
        compile_s = "-" if r.compile_s is None else f"{r.compile_s:.1f}"
        print(f"{r.name:<11} {r.adamw_ms:>9.2f} {r.eager:>6.2f}x {compiled:>9} {ratio:>15} {compile_s:>10}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="nano", help="model preset (default nano)")
    parser.add_argument("--optimizers", default=",".join(compiled_step.CHECKED),
                        help="comma-separated (default: those train.compile_step takes)")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps of each kind")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on the CPU (default 1: see bench/optimizer_step.py)")
    args = parser.parse_args(argv)
    names = args.optimizers.split(",")
    for name in names:
        try:
            optimizers.spec(name)
        except ValueError as e:
            parser.error(str(e))
    torch.set_num_threads(args.threads)
    rows = measure(step_model(args.model, args.device), names, args.repeats)
    print_rows(rows, f"compiled optimizer steps on {args.device} ({args.model}, fp32, "
                     f"{torch.get_num_threads()} threads, median of {args.repeats}; x torch's AdamW):")
    return 0


if __name__ == "__main__":
    sys.exit(main())
