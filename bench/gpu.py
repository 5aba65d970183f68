"""Every optimizer's throughput, MFU and peak memory on a GPU, through the real training loop.

    python -m bench.gpu [--suite gpt2_small] [--steps 40] [--optimizers adamw,adam_mini]
                        [--device cuda] [--data shakespeare_gpt2] [--out FILE]

Each optimizer of a shipped suite trains the suite's model with the suite's own settings (bf16
autocast, torch.compile, its micro-batch, its hyper-parameters) for `--steps` steps through
`runners.train.run`, on prepared GPT-2 BPE tokens (`--data`, default shakespeare_gpt2: the
speed does not depend on the text, so OpenWebText is not needed). A step is one micro-batch, so
the optimizer's share of a step is as large as the suite can make it; the table also gives that
share at the suite's real batch (480 sequences, many micro-batches per optimizer step). Runs go
one after another in this process, as `make suite=` runs them, and each run folder (with its
final checkpoint) is deleted once its summary is read.

Printed per optimizer: tokens/s and MFU (the first steps, compile included, are left out),
milliseconds per step in forward+backward and in the optimizer, the optimizer's time as a
multiple of AdamW's, peak CUDA memory (allocated) measured and as `make plan` predicts it, and
the optimizer state as a fraction of AdamW's. `--device cpu` runs the same on the CPU (a check
of the script with a small suite, not a benchmark).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile

import torch

from runners import plan
from runners.config import ConfigError, resolve_run
from runners.data import prepare_on_first_use
from runners.hydra_app import compose_config
from runners.suite import expand, run_folder


def _configs(args, results_dir: str) -> list[dict]:
    overrides = [f"suite={args.suite}", f"data={args.data}", f"results_dir={results_dir}",
                 "train.log_every=10", f"train.device={args.device}", "train.progress=false", "seeds=[0]"]
    suite = compose_config(overrides)
    if args.optimizers:
        suite["only"] = args.optimizers.split(",")
    runs = []
    # Each arm's lr as the suite has it at its own budget (`lr: tuned` included), then the
    # budget cut to a few steps of one micro-batch each: the step's speed, not the loss.
    for raw in expand(suite):
        micro = raw["train"].get("micro_batch") or raw["budget"]["global_batch"]
        raw["budget"] = {**raw["budget"], "tokens": None, "steps": args.steps, "eval_every": args.steps,
                         "warmup": max(args.steps // 10, 1), "global_batch": micro}
        if args.device == "cpu":
            raw["train"]["compile"] = False
        runs.append(resolve_run(raw))
    return runs


def _row(cfg: dict, summary: dict, suite_batch: int, device: str) -> dict:
    predicted = plan.estimate(cfg, device).peak
    fwd_bwd, opt = summary["time_fwd_bwd_s"], summary["time_opt_s"]
    accumulation = suite_batch // cfg["budget"]["global_batch"]
    return {
        "optimizer": cfg["optimizer"]["name"], "tokens_per_s": summary["tokens_per_s"],
        "mfu": summary["mfu"], "fwd_bwd_ms": 1e3 * fwd_bwd, "opt_ms": 1e3 * opt,
        "opt_share_at_suite_batch": opt / (accumulation * fwd_bwd + opt),
        "peak_gib": summary["peak_mem_bytes"] / 2**30, "predicted_gib": predicted / 2**30,
        "state_bytes": summary["opt_state_bytes"],
    }


def _table(rows: list[dict], header: str) -> str:
    adamw = next((r for r in rows if r["optimizer"] == "adamw"), None)
    lines = [header, "",
             "| optimizer | tokens/s | MFU | fwd+bwd ms | opt ms | opt x AdamW | opt share at suite batch "
             "| peak GiB | plan GiB | measured / plan | state x AdamW |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def vs_adamw(key):
            return f"{r[key] / adamw[key]:.2f}" if adamw else "-"

        mfu = "-" if r["mfu"] is None else f"{r['mfu']:.1%}"
        lines.append(
            f"| {r['optimizer']} | {r['tokens_per_s']:,.0f} | {mfu} | {r['fwd_bwd_ms']:.1f} "
            f"| {r['opt_ms']:.1f} | {vs_adamw('opt_ms')} | {r['opt_share_at_suite_batch']:.2%} "
            f"| {r['peak_gib']:.2f} | {r['predicted_gib']:.2f} | {r['peak_gib'] / r['predicted_gib']:.2f} "
            f"| {vs_adamw('state_bytes')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="gpt2_small")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--optimizers", default=None, help="comma-separated; default: the suite's")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--data", default="shakespeare_gpt2", help="a prepared data set (data/<name>)")
    ap.add_argument("--out", default=None, help="also write the table (markdown) here")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench.gpu: no CUDA device is visible (use --device cpu to check the script)", file=sys.stderr)
        return 2

    from runners.train import run

    prepare_on_first_use(args.data)
    rows, status = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        try:
            configs = _configs(args, tmp)
        except ConfigError as e:
            print("\n".join(f"error: {line}" for line in e.errors), file=sys.stderr)
            return 2
        suite_batch = compose_config([f"suite={args.suite}"])["budget"]["global_batch"]
        device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
        cfg0 = configs[0]
        header = (f"{args.suite} on {device_name}, torch {torch.__version__}: {args.steps} steps of "
                  f"{cfg0['budget']['global_batch']} x {cfg0['budget']['seq_len']} tokens, "
                  f"compile={cfg0['train']['compile']}, suite batch {suite_batch}")
        table = header
        for i, cfg in enumerate(configs, 1):
            held = torch.cuda.memory_allocated() if args.device == "cuda" else 0
            print(f"[{i}/{len(configs)}] {cfg['optimizer']['name']} ({held / 2**20:.0f} MiB held before it)",
                  flush=True)
            info = run(cfg)
            if info["status"] != "completed":
                print(f"  {info['status']}: {info.get('error')}", flush=True)
                status = 1
                continue
            rows.append(_row(cfg, info["summary"], suite_batch, args.device))
            shutil.rmtree(run_folder(cfg).path)
            if args.device == "cuda":
                torch.cuda.empty_cache()
            table = _table(rows, header)
            if args.out:  # after every run: a run that dies leaves the rows before it
                with open(args.out, "w") as f:
                    f.write(table + "\n")
    print(table)
    return status


if __name__ == "__main__":
    sys.exit(main())
