"""The GPU figures in one command: every optimizer's step eager and compiled against fused AdamW,
and the training loop's tokens/s, MFU and peak memory (against `make plan`'s) at each arm's
micro_batch=auto.

    python -m bench.gpu [--suite gpt2_small] [--also gpt2_xl] [--optimizers adamw,adam_mini,...]
                        [--arms adamw,adam_mini] [--steps 30] [--repeats 20] [--budget-s 420]
                        [--device cuda] [--data shakespeare_gpt2] [--out FILE] [--quick]

Four parts, the most wanted first; once `--budget-s` seconds have gone, no new part (and no new
compiled step) starts, and the Markdown table (`--out`, written again after each part) says what
was left out:

1. steps: each optimizer's step on the suite model's real parameters (fp32, fixed random
   gradients), eager and then compiled (train.compile_step, where it is taken), each step timed
   right after one of torch's fused AdamW (bench/compiled_step.py), against the goals: Adam-mini at
   most 1.0x fused AdamW's step, every other optimizer at most 1.5x;
2. loop, AdamW: the suite's first arm (AdamW) through `runners.train.run` with the suite's
   settings (bf16 autocast, torch.compile, its hyper-parameters) on prepared GPT-2 BPE tokens
   (`--data`: the speed does not depend on the text), at micro_batch=auto for the suite's batch
   (the planner's choice, checked by a probe on the GPU) and one micro-batch per step, for
   `--steps` steps: tokens/s, MFU and the per-step times leave out the first tenth (compilation);
   peak CUDA memory (allocated) against the plan's prediction. The loop syncs only where it reads
   the loss back (every 10 steps here) and times steps with CUDA events (runners/step_clock.py);
3. the steps of part 1 on `--also`'s model (gpt2_xl), eager only: compiling its ~600 tensors
   would take minutes;
4. loop, the other arms (`--arms`), as part 2, each with the compiled step where it is taken.

Runs go one after another in this process, and each run folder is deleted once read. `--quick`
checks the script on the CPU in seconds (`--device cpu`): the tiny suite, part 1 on a one-layer
nano model with 3 timed steps, no part 3; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time

import torch

import optimizers
from bench import compiled_step as steps_bench
from runners import compiled_step, plan
from runners.config import ConfigError, resolve_run
from runners.data import prepare_on_first_use
from runners.hydra_app import compose_config
from runners.suite import expand, run_folder

SEVEN = ("adamw", "adam_mini", "adafactor", "came", "sm3", "lamb", "ademamix")
STEP_GOAL = {"adam_mini": 1.0}  # the goals, x fused AdamW's step; the others: DEFAULT_GOAL
DEFAULT_GOAL = 1.5
ADAMW = {"cuda": "torch's fused AdamW", "cpu": "torch's foreach AdamW"}  # the baseline step


class Budget:
    """The seconds the command may take; a part starts only while some are left."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.skipped: list[str] = []

    def allows(self, what: str) -> bool:
        if time.monotonic() < self.end:
            return True
        self.skipped.append(what)
        return False


# ---------------------------------------------------------------- parts 1 and 3: the steps

def step_rows(preset: str, device: str, names: list[str], repeats: int, compile_them: bool,
              budget: Budget, **overrides) -> list[steps_bench.StepRow]:
    model = steps_bench.step_model(preset, device, **overrides)
    rows = []
    for name in names:
        compiled = compile_them and budget.allows(f"{preset}: {name} compiled")
        rows += steps_bench.measure(model, [name], repeats, compiled=compiled)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def steps_table(rows: list[steps_bench.StepRow], header: str) -> str:
    lines = [header, "",
             "| optimizer | AdamW ms | eager x AdamW | compiled x AdamW | compiled / eager | compile s "
             "| goal x AdamW | met | state x AdamW |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        goal = STEP_GOAL.get(r.name, DEFAULT_GOAL)
        best = min(r.eager, r.compiled or r.eager)
        compiled = f"{r.compiled:.2f}" if r.compiled is not None else (r.refused and "refused") or "not run"
        lines.append(
            f"| {r.name} | {r.adamw_ms:.2f} | {r.eager:.2f} | {compiled} "
            f"| {'-' if r.compiled is None else f'{r.compiled / r.eager:.2f}'} "
            f"| {'-' if r.compile_s is None else f'{r.compile_s:.0f}'} | {goal:.1f} "
            f"| {'yes' if best <= goal else 'no'} | {r.state:.2f} |")
    refused = {r.name: r.refused for r in rows if r.refused}
    lines += ["", *(f"- {name}: train.compile_step refuses it: {why}." for name, why in refused.items())]
    return "\n".join(lines)


# ---------------------------------------------------------------- parts 2 and 4: the loop

def loop_config(args, raw: dict) -> dict:
    """The run of one arm: the suite's settings at micro_batch=auto, cut to `--steps` steps of one
    micro-batch each (the step's speed, not the loss)."""
    raw["train"]["compile_step"] = compiled_step.why_not(raw["optimizer"]) is None
    if args.device == "cpu":  # a check of the script: compiling on the CPU takes minutes
        raw["train"].update(compile=False, compile_step=False)
    micro = resolve_run(raw)["train"]["micro_batch"]  # auto: sized for the suite's batch
    raw["train"]["micro_batch"] = micro
    raw["budget"] = {**raw["budget"], "tokens": None, "steps": args.steps, "eval_every": args.steps,
                     "warmup": max(args.steps // 10, 1), "global_batch": micro}
    return resolve_run(raw)


def loop_row(cfg: dict, summary: dict, suite_batch: int, device: str) -> dict:
    fwd_bwd, opt = summary["time_fwd_bwd_s"], summary["time_opt_s"]
    accumulation = suite_batch // cfg["budget"]["global_batch"]
    return {
        "optimizer": cfg["optimizer"]["name"], "micro_batch": cfg["train"]["micro_batch"],
        "compile_step": cfg["train"]["compile_step"], "tokens_per_s": summary["tokens_per_s"],
        "mfu": summary["mfu"], "fwd_bwd_ms": 1e3 * fwd_bwd, "opt_ms": 1e3 * opt,
        "opt_share_at_suite_batch": opt / (accumulation * fwd_bwd + opt),
        "peak_gib": summary["peak_mem_bytes"] / 2**30,
        "predicted_gib": plan.estimate(cfg, device).peak / 2**30, "state_bytes": summary["opt_state_bytes"],
    }


def loop_table(rows: list[dict], header: str) -> str:
    adamw = next((r for r in rows if r["optimizer"] == "adamw"), None)
    lines = [header, "",
             "| optimizer | micro-batch | compiled step | tokens/s | MFU | fwd+bwd ms | opt ms | opt x AdamW "
             "| opt share at suite batch | peak GiB | plan GiB | measured / plan | state x AdamW |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def vs_adamw(key):
            return f"{r[key] / adamw[key]:.2f}" if adamw else "-"

        mfu = "-" if r["mfu"] is None else f"{r['mfu']:.1%}"
        lines.append(
            f"| {r['optimizer']} | {r['micro_batch']} | {'yes' if r['compile_step'] else 'no'} "
            f"| {r['tokens_per_s']:,.0f} | {mfu} | {r['fwd_bwd_ms']:.1f} | {r['opt_ms']:.1f} "
            f"| {vs_adamw('opt_ms')} | {r['opt_share_at_suite_batch']:.2%} | {r['peak_gib']:.2f} "
            f"| {r['predicted_gib']:.2f} | {r['peak_gib'] / r['predicted_gib']:.2f} "
            f"| {vs_adamw('state_bytes')} |")
    return "\n".join(lines)


def run_arms(args, raws: list[dict], suite_batch: int, rows: list[dict], budget: Budget) -> int:
    """Train each arm (raw run config), appending its row; 1 when one failed."""
    from runners.train import run

    status = 0
    for raw in raws:
        name = raw["optimizer"]["name"]
        if not budget.allows(f"loop: {name}"):
            continue
        try:
            cfg = loop_config(args, raw)
        except ConfigError as e:
            print(f"  {name}: " + "; ".join(e.errors), file=sys.stderr, flush=True)
            status = 1
            continue
        print(f"[loop] {name} at micro-batch {cfg['train']['micro_batch']}", flush=True)
        info = run(cfg)
        if info["status"] != "completed":
            print(f"  {info['status']}: {info.get('error')}", flush=True)
            status = 1
            continue
        rows.append(loop_row(cfg, info["summary"], suite_batch, args.device))
        shutil.rmtree(run_folder(cfg).path)
        if args.device == "cuda":
            torch.cuda.empty_cache()
    return status


# ---------------------------------------------------------------- the command

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="gpt2_small")
    ap.add_argument("--also", default="gpt2_xl", help="a model preset for part 3, or none")
    ap.add_argument("--optimizers", default=",".join(SEVEN), help="parts 1 and 3 (comma-separated)")
    ap.add_argument("--arms", default="adamw,adam_mini", help="parts 2 and 4: the suite's arms to train")
    ap.add_argument("--steps", type=int, default=30, help="training steps per arm")
    ap.add_argument("--repeats", type=int, default=20, help="timed optimizer steps of each kind")
    ap.add_argument("--budget-s", type=float, default=420, help="start no new part after this")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--data", default="shakespeare_gpt2", help="a prepared data set (data/<name>)")
    ap.add_argument("--out", default=None, help="also write the tables (Markdown) here")
    ap.add_argument("--quick", action="store_true", help="check the script on the CPU in seconds")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench.gpu: no CUDA device is visible (use --device cpu --quick to check the script)",
              file=sys.stderr)
        return 2
    names = args.optimizers.split(",")
    try:
        for name in names:
            optimizers.spec(name)
        suite = compose_config([f"suite={args.suite}", f"data={args.data}", "train.log_every=10",
                                f"train.device={args.device}", "train.progress=false", "seeds=[0]",
                                "train.micro_batch=auto"])
        suite["only"] = args.arms.split(",")
        raws = expand(suite)
    except (ConfigError, ValueError) as e:
        print("\n".join(f"error: {line}" for line in getattr(e, "errors", [str(e)])), file=sys.stderr)
        return 2

    budget = Budget(args.budget_s)
    prepare_on_first_use(args.data)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    preset = raws[0]["model"]["name"]
    small = {"n_layer": 1, "bias": False} if args.quick else {}  # 9 tensors: a short compile
    repeats = 3 if args.quick else args.repeats
    suite_batch = suite["budget"]["global_batch"]
    tables, loop_rows, status = [], [], 0

    def write(final: bool = False) -> None:
        left_out = [f"- not measured within --budget-s {args.budget_s:g}: {', '.join(budget.skipped)}"
                    ] if budget.skipped else []
        text = "\n\n".join([*tables, *([loop_table(loop_rows, loop_header)] if loop_rows else []),
                            *left_out]) + "\n"
        if args.out:  # after every part: a command cut short leaves the parts before it
            with open(args.out, "w") as f:
                f.write(text)
        if final:
            print(text)

    loop_header = (f"### The training loop: {args.suite} on {device_name}, torch {torch.__version__}: "
                   f"{args.steps} steps of one micro-batch (micro_batch=auto for the suite's batch of "
                   f"{suite_batch}) x {suite['budget']['seq_len']} tokens, "
                   f"compile={raws[0]['train']['compile']}")
    with tempfile.TemporaryDirectory() as tmp:
        for raw in raws:
            raw["results_dir"] = tmp
        print(f"[steps] {preset}", flush=True)
        tables.append(steps_table(
            step_rows(preset, args.device, names, repeats, True, budget, **small),
            f"### Optimizer steps: {preset}{' (one layer)' if small else ''} on {device_name}, torch "
            f"{torch.__version__}, fp32 weights, median of {repeats} steps, x {ADAMW[args.device]}"))
        write()
        status |= run_arms(args, raws[:1], suite_batch, loop_rows, budget)
        write()
        if args.also != "none" and not args.quick and budget.allows(f"{args.also}: steps"):
            print(f"[steps] {args.also}", flush=True)
            tables.append(steps_table(
                step_rows(args.also, args.device, names, repeats, False, budget),
                f"### Optimizer steps: {args.also} on {device_name}, eager only, fp32 weights, median of "
                f"{repeats} steps, x {ADAMW[args.device]}"))
            write()
        status |= run_arms(args, raws[1:], suite_batch, loop_rows, budget)
    write(final=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
