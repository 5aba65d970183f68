"""What a run will cost before it runs: FLOPs, time on a device, and peak memory.

Peak memory = weights + gradients + optimizer state (optimizers.predict_state: exact, from each
optimizer's own count or, without one, one step on a shape-identical copy of the model) +
activations of one micro-batch. The activation term counts what autograd keeps per token for our
GPT-2 (16 * n_embd values per layer: both layer-norm inputs and outputs, qkv, the attention
output, the residual stream, the MLP's 4x hidden before and after GELU; SDPA keeps no T x T
matrix) plus the logits, their float copy for the loss and its gradient (3 * vocab per token).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

import optimizers
from models import GPT, GPTConfig, build_model

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


@dataclass
class Estimate:
    flops: float
    seconds: float
    weights: int
    grads: int
    state: int
    activations: int
    device_memory: int
    # How the state bytes were found when not by the optimizer's own count from the shapes
    # (an optimizer from config or a plugin without one: optimizers/state_prediction.py).
    state_found_by: str | None = None

    @property
    def peak(self) -> int:
        return self.weights + self.grads + self.state + self.activations

    @property
    def checkpoint(self) -> int:
        """Bytes a run's checkpoint keeps on disk: its weights and optimizer state (the final one
        stays after the run, for audits and resumption)."""
        return self.weights + self.state

    @property
    def fits(self) -> bool:
        return self.peak <= self.device_memory


def meta_model(model_cfg: dict) -> GPT:
    with torch.device("meta"):
        return build_model(**model_cfg)


def activation_bytes(cfg: GPTConfig, micro_batch: int, seq_len: int, cuda: bool) -> int:
    tokens = micro_batch * seq_len
    per_value = 2 if cuda else 4  # bf16 autocast on CUDA, fp32 on CPU
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
    hp = {k: v for k, v in cfg["optimizer"].items() if k != "name"}
    n = model.num_params()
    # A cooldown branch trains from its parent's checkpoint: only its own steps cost.
    start = cfg["branch"]["from_step"] if cfg.get("branch") else 0
    evals = b["steps"] // b["eval_every"] - start // b["eval_every"] + (start == 0)
    trained = (b["steps"] - start) * b["global_batch"] * b["seq_len"]
    # Training is 3 passes (forward + 2x backward) per token; evaluation is the forward only.
    flops = model.flops_per_token(b["seq_len"]) * (trained + evals * cfg["data"]["val_tokens"] / 3)
    rate, memory = device_of(device)
    micro = cfg["train"].get("micro_batch") or b["global_batch"] // world_size
    state, found_by = optimizers.predict_state(cfg["optimizer"]["name"], model, **hp)
    return Estimate(
        flops=flops, seconds=flops / (rate * world_size), weights=4 * n, grads=4 * n, state=state,
        activations=activation_bytes(model.config, micro, b["seq_len"], device != "cpu"),
        device_memory=memory, state_found_by=found_by,
    )


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
