"""Cutting a multi-tensor step into chunks, so that its temporaries stay small on the CPU.

A `torch._foreach_*` op over a whole model allocates its full-size temporaries at once. On the
CPU an allocation that large is mapped fresh from the kernel every step and page-faulted in,
which costs about as much as the arithmetic (measured: a 0.5 GB temporary made LAMB's step on
GPT-2 small ~30% slower); the temporaries of chunks of a few million elements are recycled by the
allocator from one chunk to the next instead. CUDA's caching allocator already recycles, and
fewer, larger launches are faster there, so CUDA tensors are not cut.

The cuts follow global sizes, so every rank of a sharded model cuts the same chunks and a
collective issued per chunk matches up across ranks.
"""

from __future__ import annotations

import torch

CPU_CHUNK_NUMEL = 1 << 22  # 16 MB of fp32


def chunks(params: list[torch.Tensor]):
    """Yield consecutive runs of `params`, each at most CPU_CHUNK_NUMEL elements on the CPU
    (a larger tensor gets a run of its own), or all of them at once elsewhere."""
    if not params or params[0].device.type != "cpu":
        yield params
        return
    for run, _ in consecutive_runs(params, [p.numel() for p in params], CPU_CHUNK_NUMEL):
        yield run


def consecutive_runs(items: list, sizes: list[int], budget: int):
    """(run, its total size) for consecutive runs of items whose sizes add up to at most
    `budget` (a bigger item goes alone)."""
    run, total = [], 0
    for item, n in zip(items, sizes):
        if run and total + n > budget:
            yield run, total
            run, total = [], 0
        run.append(item)
        total += n
    if run:
        yield run, total
