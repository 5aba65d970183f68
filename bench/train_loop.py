"""The training loop's throughput against a bare minimal loop, in one process.

    python -m bench.train_loop [--steps 100] [--repeats 3]

Both train the tiny suite's nano model on its budget's batches with AdamW for the same number of
steps. The bare loop is what a minimal script does: fetch the batch, forward, backward, clip,
step. The harness adds the lr schedule, timing, logging a metrics row per step, the progress
bar and checkpoints. The two alternate, so both see the same machine load; each timing is the
wall-clock of the whole loop (the harness's single evaluation pass is left out: the bare loop
has none). Target: the harness keeps at least 0.95 of the bare loop's tokens/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import torch

import optimizers
from models import build_model
from runners.config import resolve_run
from runners.data import open_data, train_batch
from runners.hydra_app import compose_config

TARGET = 0.95


def bare_loop(cfg: dict) -> float:
    """Seconds for the run's steps in the plainest loop that trains the same thing."""
    b = cfg["budget"]
    data = open_data(cfg["data"]["name"], None, cfg["model"]["vocab_size"], b["seq_len"])
    torch.manual_seed(cfg["seed"])
    model = build_model(**cfg["model"])
    hp = {k: v for k, v in cfg["optimizer"].items() if k != "name"}
    opt = optimizers.build("adamw", model, **hp)
    start = time.perf_counter()
    for step in range(b["steps"]):
        x, y = train_batch(data, cfg["data"]["seed"], step, b["global_batch"], b["seq_len"])
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), b["grad_clip"], foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
    loss.item()
    return time.perf_counter() - start


def harness_loop(cfg: dict) -> float:
    """Seconds for the same steps through runners.train, less its evaluation passes."""
    from runners import train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = {**cfg, "results_dir": tmp}
        spent_in_eval = 0.0
        evaluate = train.evaluate

        def timed_evaluate(*args, **kwargs):
            nonlocal spent_in_eval
            t = time.perf_counter()
            result = evaluate(*args, **kwargs)
            spent_in_eval += time.perf_counter() - t
            return result

        train.evaluate = timed_evaluate
        try:
            start = time.perf_counter()
            train.run(cfg)
            return time.perf_counter() - start - spent_in_eval
        finally:
            train.evaluate = evaluate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    cfg = resolve_run(compose_config([
        "model=nano", "data=shakespeare_bytes", "budget=tiny", "optimizer=adamw", "budget.tokens=null",
        f"budget.steps={args.steps}",
        f"budget.eval_every={args.steps}", "train.progress=true", "train.ckpt_every=50"]))
    tokens = args.steps * cfg["budget"]["global_batch"] * cfg["budget"]["seq_len"]
    bare, harness = [], []
    bare_loop({**cfg, "budget": {**cfg["budget"], "steps": 5}})  # warm-up: allocator, kernels
    for _ in range(args.repeats):
        bare.append(bare_loop(cfg))
        harness.append(harness_loop(cfg))
    bare_tps, harness_tps = tokens / statistics.median(bare), tokens / statistics.median(harness)
    ratio = harness_tps / bare_tps
    print(f"\ntraining loop, {args.steps} steps of {cfg['budget']['global_batch']}x"
          f"{cfg['budget']['seq_len']} tokens, nano model, AdamW, median of {args.repeats}:")
    print(f"  bare loop     {bare_tps:10.0f} tokens/s")
    print(f"  runners.train {harness_tps:10.0f} tokens/s")
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(f"  ratio {ratio:.3f} (target >= {TARGET}) {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
