"""One run: data + model + optimizer + loop, into its run folder.

    python -m runners.train optimizer=adam_mini model=nano budget.tokens=2e5

The loop follows nanoGPT: gradient accumulation to the global batch, warmup + decay of the lr,
global-norm clipping, fp32 weights with bf16 autocast on CUDA. What it adds is bookkeeping for a
fair comparison: the same batches for every optimizer (a function of data seed and step), a
fixed validation set, a divergence check, per-step timing split into forward+backward and the
optimizer step, peak memory, exact optimizer-state bytes, and checkpoints that resume bit for bit.
"""

from __future__ import annotations

import math
import resource
import signal
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

import optimizers
from models import build_model
from runners import branches, checkpoint, lock, parallel, plan, resume
from runners.compiled_step import CompiledStep
from runners.config import ConfigError, resolve_run, run_id
from runners.data import open_data, test_windows, train_batch, val_windows
from runners.progress import Progress
from runners.run_folder import FINISHED, RunFolder, environment
from runners.schema import show
from runners.schedule import budget_lr
from runners.sinks import MetricSinks, NullSinks
from runners.step_clock import StepClock

# SIGTERM: preemption and scancel; SIGUSR1/SIGUSR2: SLURM's warning before a time limit.
INTERRUPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class Interrupted(Exception):
    """The run was asked to stop (preemption); it checkpointed and can resume."""

    run_status = "interrupted"  # what run.json records (RunFolder.recording)


def check_device(want: str, local_rank: int = 0) -> torch.device:
    """train.device as a torch device on this machine, or ConfigError saying what is visible."""
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cpu":
        return torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(want[5:]) if want.startswith("cuda:") else local_rank
    if index >= count:
        seen = f"{count} CUDA device(s) are visible" if count else "no CUDA device is visible"
        raise ConfigError([f"train.device={want}: {seen}; use train.device=cpu"
                           + (f" or cuda:0..cuda:{count - 1}" if count else "")])
    return torch.device("cuda", index)


def _device(cfg: dict, world: parallel.World) -> torch.device:
    device = check_device(cfg["train"]["device"], world.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    # VmHWM, the process's peak resident set since _reset_peak_memory (Linux); getrusage's
    # ru_maxrss cannot be reset and even starts from the parent's peak after a fork.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak_memory(device: torch.device) -> None:
    """Each run reports its own peak, also when several run one after another in a process."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS
    except OSError:
        pass


def _peak_flops(device: torch.device) -> float | None:
    return plan.peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None


class _StopFlag:
    """Turns SIGTERM/SIGUSR1/SIGUSR2 into a request to checkpoint at the end of the current step."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        for sig in INTERRUPT_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _set_mode(opt: torch.optim.Optimizer, mode: str) -> None:
    """opt.train() or opt.eval(), for optimizers that have them."""
    switch = getattr(opt, mode, None)
    if callable(switch):
        switch()


@contextmanager
def eval_weights(opt: torch.optim.Optimizer):
    """Optimizers with weights of their own for evaluation (Schedule-Free's averaged iterate)
    swap them in for every evaluation and checkpoint, as their authors ask, by `eval()` and
    back by `train()`; for the others this does nothing."""
    _set_mode(opt, "eval")
    try:
        yield
    finally:
        _set_mode(opt, "train")


@torch.no_grad()
def evaluate(model: torch.nn.Module, val: tuple[torch.Tensor, torch.Tensor], micro_batch: int,
             device: torch.device, autocast) -> float:
    model.eval()
    x_all, y_all = val
    total = torch.zeros((), dtype=torch.float64, device=device)
    for i in range(0, len(x_all), micro_batch):
        x, y = x_all[i:i + micro_batch].to(device), y_all[i:i + micro_batch].to(device)
        with autocast:
            _, loss = model(x, y)
        total += loss.double() * len(x)
    if hasattr(model, "reshard"):  # FSDP2 keeps the root unsharded after a forward
        model.reshard()
    model.train()
    return (total / len(x_all)).item()


def run(raw_cfg: dict, on_eval=None) -> dict:
    """Train one run to its budget (or resume it); returns its run.json.

    `on_eval(step, tokens, val_loss) -> bool` is called after each evaluation (on rank 0's
    numbers, on every rank); returning True stops the run there with status `pruned`, which
    is final (how a tuner prunes a trial).

    One process at a time trains a run: it holds the run's lock throughout (runners/lock.py), and
    another process gets RunLocked, which names the holder. However the run ends, its run.json
    says so (RunFolder.recording)."""
    world = parallel.world_from_env()
    cfg = resolve_run(raw_cfg, world_size=world.size)
    device = _device(cfg, world)
    folder = RunFolder(Path(cfg.get("results_dir", "results")) / cfg["suite"] / run_id(cfg))
    if (folder.read_info() or {}).get("status") in FINISHED:
        return _skip_finished(folder, world)
    parallel.init(world, device)
    try:
        info = _owned_run(cfg, folder, world, device, on_eval)
    except BaseException:
        parallel.shutdown(clean=False)
        raise
    parallel.shutdown()
    return info


def _owned_run(cfg: dict, folder: RunFolder, world: parallel.World, device: torch.device,
               on_eval) -> dict:
    with lock.owning(folder.path, world, device):
        if world.is_main:
            folder.remove_temporaries()  # what killed writes left: this process owns the folder now
        if folder.is_finished():  # by the process that held it, or its run.json is lost
            return _skip_finished(folder, world)
        _reset_peak_memory(device)
        with folder.recording(cfg) if world.is_main else nullcontext():
            return _train(cfg, folder, world, device, on_eval)


def _skip_finished(folder: RunFolder, world: parallel.World) -> dict:
    info = folder.record()
    if world.is_main and info != folder.read_info():  # torn, lost, or killed before it said so
        folder.write_info(info)
        print(f"warning: {folder.path.name}: run.json did not say how the run ended: rebuilt from "
              "config.yaml and the final checkpoint", file=sys.stderr)
    if world.is_main:
        print(f"{folder.path.name}: already {info['status']}, skipped")
    return info


def _train(cfg: dict, folder: RunFolder, world: parallel.World, device: torch.device, on_eval) -> dict:
    budget, train, data_cfg = cfg["budget"], cfg["train"], cfg["data"]
    steps, seq_len, batch = budget["steps"], budget["seq_len"], budget["global_batch"]
    local_batch = batch // world.size
    micro = train.get("micro_batch") or local_batch
    tokens_per_step = batch * seq_len
    data = open_data(data_cfg["name"], data_cfg.get("path"), cfg["model"]["vocab_size"], seq_len)
    val = val_windows(data, data_cfg["val_tokens"], seq_len)
    test = test_windows(data, data_cfg["test_tokens"], seq_len)

    torch.manual_seed(cfg["seed"])  # paired seeds: the same initial weights for every optimizer
    model = build_model(**cfg["model"]).to(device)
    kind = train.get("parallel", "ddp")
    wrapped = parallel.wrap(model, kind, world)
    sharded = world.distributed and kind == "fsdp"
    opt_cfg = {k: v for k, v in cfg["optimizer"].items() if k != "name"}
    opt = optimizers.build(cfg["optimizer"]["name"], model, **opt_cfg)
    step_optimizer = CompiledStep(opt) if train["compile_step"] else opt.step  # before any compile
    # Taken now: after a forward, FSDP2 leaves the root's parameters unsharded (swapped for
    # full tensors) until the next backward, and model.parameters() would list those.
    params = [p for p in model.parameters() if p.requires_grad]
    fwd_model = torch.compile(wrapped) if train["compile"] else wrapped
    use_bf16 = device.type == "cuda" and train["dtype"] in ("auto", "bfloat16")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()
    peak_flops = _peak_flops(device)

    progress, warning = checkpoint.load(
        folder, model, opt, world, sharded,
        usable=lambda p: folder.rows_problem(resume.logged_steps(p, train["log_every"])))
    branching = progress is None and cfg.get("branch") is not None
    if branching:  # a cooldown branch's first start: from its parent's kept checkpoint
        progress = branches.start(folder, cfg, model, opt, sharded, write_rows=world.is_main)
    _set_mode(opt, "train")  # a checkpoint holds the evaluation weights (eval_weights)
    info, progress = _records(cfg, folder, progress, warning, data.fingerprint, device, world, branching)
    info.update(status="running", step=progress["step"], total_steps=steps, diverged_at_step=None,
                error=None, summary=None)
    sinks = MetricSinks(cfg, folder) if world.is_main else NullSinks()
    sinks.write_info(info)
    if progress["step"] == 0 and progress["val_loss"] is None:
        with eval_weights(opt):
            progress["val_loss"] = evaluate(fwd_model, val, micro, device, autocast)
        progress["best_val_loss"] = progress["val_loss"]
        sinks.log({"step": 0, "tokens": 0, "wall_time_s": 0.0, "val_loss": progress["val_loss"]})

    keep_at = set(train["keep_ckpt_at"])  # where this run's cooldown branches start
    warm_steps = min(10, steps // 10)  # compile and allocator warm-up, left out of mean tokens/s
    status, diverged_at = "completed", None
    # tqdm's bar on a terminal; off one (SLURM, CI) a log line per evaluation and every 10 s
    display = Progress(train["progress"] and world.is_main, folder.path.name, steps, progress["step"])
    # The loop waits for the device only at read points: logging steps, checkpoints and a stop.
    # Until then each step's loss stays on the device and its times in events (StepClock).
    clock, losses = StepClock(device), []
    pinned = device.type == "cuda"  # batches copied to the device while the host moves on
    try:
        with _StopFlag() as stop:
            for step in range(progress["step"], steps):
                lr = budget_lr(budget, step, cfg["optimizer"]["lr"])
                for group in opt.param_groups:
                    # a group with a peak lr of its own (e.g. the AdamW part beside Muon) follows
                    # the same schedule from it
                    group["lr"] = lr if "lr_base" not in group else budget_lr(budget, step, group["lr_base"])
                clock.mark()
                x, y = train_batch(data, data_cfg["seed"], step, batch, seq_len, pinned=pinned)
                rows = slice(world.rank * local_batch, (world.rank + 1) * local_batch)
                x, y = x[rows], y[rows]
                loss_sum = torch.zeros((), device=device)
                for i in range(0, local_batch, micro):
                    xb = x[i:i + micro].to(device, non_blocking=pinned)
                    yb = y[i:i + micro].to(device, non_blocking=pinned)
                    with parallel.grad_sync(wrapped, i + micro >= local_batch), autocast:
                        _, loss = fwd_model(xb, yb)
                        (loss * (len(xb) / local_batch)).backward()
                    loss_sum += loss.detach() * len(xb)
                grad_norm = parallel.clip_grad_norm_(params, budget["grad_clip"])
                clock.mark()
                step_optimizer()
                opt.zero_grad(set_to_none=True)
                clock.mark()
                losses.append(loss_sum)

                done = step + 1
                progress["step"] = done
                last = done == steps
                log_now = done % train["log_every"] == 0 or last
                save_now = (done % train["ckpt_every"] == 0 or done in keep_at) and not last
                stop_now = parallel.any_rank(stop.signum is not None, device)
                if not (log_now or save_now or stop_now):
                    continue
                # A read point: the losses since the last one, in one collective and one read, are
                # all checked for divergence, against the run's first step's (whatever log_every):
                # the first bad one names the step.
                times = clock.read()
                _count_times(progress, times, done, warm_steps)
                window = [s / batch for s in parallel.all_reduce_(torch.stack(losses)).tolist()]
                losses = []
                if progress["first_loss"] is None:
                    progress["first_loss"] = window[0]
                bad = _first_diverged(window, progress["first_loss"], budget)
                row = _log_row(done, tokens_per_step, window[-1], lr, grad_norm, times[-1], progress, device)
                if bad is not None:
                    status, diverged_at = "diverged", done - len(window) + 1 + bad
                    sinks.log(row)
                    break
                if log_now:
                    if done % budget["eval_every"] == 0 or last:
                        with eval_weights(opt):
                            row["val_loss"] = progress["val_loss"] = evaluate(fwd_model, val, micro, device, autocast)
                        progress["best_val_loss"] = min(progress["best_val_loss"], row["val_loss"])
                        if on_eval is not None and not last and on_eval(done, row["tokens"], row["val_loss"]):
                            status = "pruned"
                            sinks.log(row)
                            break
                    sinks.log(row)
                    display.update(row)
                    # a signal during the evaluation stops the run at this step too
                    stop_now = stop_now or parallel.any_rank(stop.signum is not None, device)
                if stop_now:
                    with eval_weights(opt):
                        checkpoint.save(folder, model, opt, progress, world, sharded)
                    name = signal.Signals(stop.signum).name if stop.signum else "a signal on another rank"
                    raise Interrupted(f"{name} after step {done}")
                if save_now:
                    with eval_weights(opt):
                        checkpoint.save(folder, model, opt, progress, world, sharded)
                    if done in keep_at and world.is_main:
                        branches.keep(folder, done)
    except BaseException:
        info["step"] = progress["step"]  # how far it got; run() records how it ended
        raise
    finally:
        display.close()
        sinks.close()

    # The held-out test set, read once at the end: what the final comparison reports (tuning
    # and the curves see only the validation set).
    _set_mode(opt, "eval")  # from here on the weights are the ones evaluated and kept
    test_loss = evaluate(fwd_model, test, micro, device, autocast) if status == "completed" else None
    info.update(status=status, step=progress["step"], diverged_at_step=diverged_at,
                summary=_summary(progress, status, model, opt, device, tokens_per_step, peak_flops,
                                 seq_len, world.size, test_loss))
    progress["final"] = {k: info[k] for k in ("status", "diverged_at_step", "summary")}  # if run.json is lost
    checkpoint.save(folder, model, opt, progress, world, sharded)  # the final weights, for audits
    sinks.write_info(info)
    sinks.summary(info["summary"])
    return folder.read_info()


def _records(cfg: dict, folder: RunFolder, progress: dict | None, warning: str | None, fingerprint: dict,
             device: torch.device, world: parallel.World, branching: bool = False) -> tuple[dict, dict]:
    """run.json's record and the progress counters of a run that starts, or resumes from the
    checkpoint `progress` (a resume on other data, or with a change that alters the numbers, is
    refused with a ConfigError before anything is written). config.yaml is rewritten: it is the
    config that runs. Warnings (checkpoints passed over, run.json rebuilt) go to stderr and to
    run.json."""
    env = environment(device.type, torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                      world.size)
    ran_with = resume.execution(cfg, device.type, world.size)
    resumed = progress is not None
    if not resumed or branching:  # a branch's own record starts with it; its progress is its parent's
        info = {"run_id": folder.path.name, "suite": cfg["suite"], "config": cfg, "env": env,
                "data_fingerprint": fingerprint, "drift": []}
    if branching:
        progress["drift"] = info["drift"] = resume.drift(cfg, progress, ran_with, fingerprint, folder.path.name)
        progress["execution"] = ran_with
    elif not resumed:
        progress = {"step": 0, "wall_time_s": 0.0, "best_val_loss": math.inf, "val_loss": None,
                    "first_loss": None, "timed_steps": 0, "timed_s": 0.0, "fwd_bwd_s": 0.0, "opt_s": 0.0,
                    "execution": ran_with, "data_fingerprint": fingerprint, "drift": []}
    else:
        progress["drift"] = progress.get("drift", []) + resume.drift(cfg, progress, ran_with, fingerprint,
                                                                     folder.path.name)
        progress["execution"] = ran_with
        info = folder.read_info()
        if info is None:
            info = {**folder.record(), "env": env}
            rebuilt = ("run.json was unreadable: rebuilt from config.yaml and the checkpoint at step "
                       f"{progress['step']}")
            warning = f"{warning}; {rebuilt}" if warning else rebuilt
        info.update(config=cfg, drift=progress["drift"])
    if warning:
        info["warnings"] = info.get("warnings", []) + [{"step": progress["step"], "warning": warning}]
    if world.is_main:
        if warning:
            print(f"warning: {folder.path.name}: {warning}", file=sys.stderr, flush=True)
        folder.create(cfg)
        folder.truncate_metrics(progress["step"] if resumed else -1)
    return info, progress


def _summary(progress, status, model, opt, device, tokens_per_step, peak_flops, seq_len, world_size,
             test_loss) -> dict:
    timed = max(progress["timed_steps"], 1)
    tokens_per_s = progress["timed_steps"] * tokens_per_step / progress["timed_s"] if progress["timed_s"] else None
    flops = model.flops_per_token(seq_len)
    return {
        "final_val_loss": progress["val_loss"] if status == "completed" else None,
        "final_test_loss": test_loss,
        "best_val_loss": progress["best_val_loss"],
        "tokens": progress["step"] * tokens_per_step,
        "wall_time_s": progress["wall_time_s"],
        "tokens_per_s": tokens_per_s,  # global: every rank's tokens
        "tokens_per_s_per_rank": tokens_per_s / world_size if tokens_per_s else None,
        # per device: one rank's share of the tokens against one device's peak
        "mfu": tokens_per_s / world_size * flops / peak_flops if peak_flops and tokens_per_s else None,
        "peak_mem_bytes": _peak_memory(device),
        "peak_mem_kind": "cuda_allocated" if device.type == "cuda" else "cpu_rss",
        "cuda_max_reserved_bytes": torch.cuda.max_memory_reserved(device) if device.type == "cuda" else None,
        "opt_state_bytes": optimizers.state_bytes(opt),
        "param_count": model.num_params(),
        "time_fwd_bwd_s": progress["fwd_bwd_s"] / timed,
        "time_opt_s": progress["opt_s"] / timed,
    }


def _count_times(progress: dict, times: list[tuple[float, float]], done: int, warm_steps: int) -> None:
    """Add the (forward+backward, optimizer) seconds of the steps up to `done` to the run's totals."""
    for step, (fwd_bwd, opt) in enumerate(times, done - len(times)):
        progress["wall_time_s"] += fwd_bwd + opt
        if step >= warm_steps:
            progress["timed_steps"] += 1
            progress["timed_s"] += fwd_bwd + opt
            progress["fwd_bwd_s"] += fwd_bwd
            progress["opt_s"] += opt


def _log_row(done, tokens_per_step, train_loss, lr, grad_norm, times, progress, device) -> dict:
    # The step's own times (runners/step_clock.py: on CUDA the stream's time between its marks).
    fwd_bwd, opt = times
    return {"step": done, "tokens": done * tokens_per_step, "train_loss": train_loss, "lr": lr,
            "grad_norm": float(grad_norm), "time_fwd_bwd_s": fwd_bwd, "time_opt_s": opt,
            "tokens_per_s": tokens_per_step / (fwd_bwd + opt), "wall_time_s": progress["wall_time_s"],
            "peak_mem_bytes": _peak_memory(device)}


def _first_diverged(losses: list[float], first_loss: float, budget: dict) -> int | None:
    """The index of the first train loss that is not finite or above diverge_factor x the run's
    first; None when none is."""
    limit = budget["diverge_factor"] * first_loss
    return next((i for i, loss in enumerate(losses) if not math.isfinite(loss) or loss > limit), None)


# Suite-level keys with no meaning for one run; set, they would be ignored, so they are refused.
SUITE_ONLY = ("optimizers", "models", "seeds", "only", "status")


def main(overrides: list[str], multirun: bool = False, config_dir: str | None = None) -> dict:
    """`python -m runners.train key=value ...` (with -m, a suite's grid: runners.suite), or
    `--config run.json` (how launchers pass a resolved config)."""
    import json

    from runners.hydra_app import compose_config

    if overrides[:1] == ["--config"]:
        raw = json.loads(Path(overrides[1]).read_text())
    elif multirun:
        from runners.suite import run_suite

        return run_suite(overrides, multirun=True, config_dir=config_dir)
    else:
        raw = compose_config(overrides, config_dir)
        _refuse_suite_keys(raw)
        if raw["plan"]:
            from runners.suite import plan_text, plan_device

            print(plan_text(raw, [resolve_run(raw, check_data=False)], plan_device(raw)))
            return raw
    info = run(raw)
    if parallel.world_from_env().is_main:
        s = info.get("summary") or {}
        print(f"{info['run_id']}: {info['status']}, final val loss {s.get('final_val_loss')}")
    return info


def _refuse_suite_keys(raw: dict) -> None:
    errors = [f"{k}={show(raw[k])}: a suite key; runners.train makes one run: use python -m runners.suite "
              f"{k}=... (or -m to sweep)" for k in SUITE_ONLY if raw[k] not in (None, False)]
    if raw["optimizer_defaults"]:
        errors.append("optimizer_defaults: a suite key; for one run set optimizer.KEY=...")
    if raw["launcher"]["name"] != "local":
        errors.append(f"launcher={raw['launcher']['name']}: runners.train runs in this process; "
                      f"launch through python -m runners.suite launcher={raw['launcher']['name']}")
    if errors:
        raise ConfigError(errors)


ENTRY = main

if __name__ == "__main__":
    from runners.cli import main as cli_main
    # runners.train's own main, not this __main__ module's: its Interrupted is the class that
    # cli catches (python -m loads this file a second time, as runners.train, for the import)
    from runners.train import main as train_main

    cli_main(train_main, "train")
