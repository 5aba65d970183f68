"""What a resume may change, and what it refuses.

A resumed run must compute what it would have computed in one go. Each checkpoint records how
its steps ran (`execution`: the train.* keys, the device type and the world size), the changes
made on earlier resumes (`drift`) and the data's fingerprint, and a resume compares them with
its own:

- FREE keys change how a run is watched and saved, not its numbers: a change is recorded in
  run.json's `drift` with the step it took effect from (the rows after it follow the new
  log_every, say);
- any other change alters the numbers: micro_batch how the gradient is summed, dtype, compile
  and compile_step the kernels, the device type, the world size and train.parallel the
  reductions. It is refused, one error line per key, unless train.allow_drift=true, which
  records it the same way with `alters_numbers: true`;
- other data (a train.bin or val.bin with another fingerprint) is always refused.
"""

from __future__ import annotations

from runners.schema import ConfigError, show

FREE = ("log_every", "ckpt_every", "progress", "wandb", "allow_drift", "keep_ckpt_at", "memory_limit_gib")
# train.* keys newer than some checkpoints, with what a checkpoint that lacks one ran with.
ADDED = {"compile_step": False, "memory_limit_gib": None}


def execution(cfg: dict, device_type: str, world_size: int) -> dict:
    """How a run's steps run: its train.* keys, the device as its type (cuda:0 and cuda:1
    compute the same), and the world size."""
    return {**cfg["train"], "device": device_type, "world_size": world_size}


def _key(name: str) -> str:
    return name if name == "world_size" else f"train.{name}"


def drift(cfg: dict, progress: dict, now: dict, fingerprint: dict, run_id: str) -> list[dict]:
    """The drift records of resuming a checkpoint's `progress` with execution `now` on data of
    `fingerprint`, or ConfigError with a line for each change refused."""
    before, step = progress.get("execution"), progress["step"]
    errors, records = [], []
    recorded = progress.get("data_fingerprint")
    if recorded is not None and recorded != fingerprint:
        errors.append(_data_changed(recorded, fingerprint, step, run_id))
    for name in sorted(set(before) | set(now)) if before else ():
        old, new = before.get(name, ADDED.get(name)), now.get(name)
        if old == new:
            continue
        alters = name not in FREE
        if alters and not cfg["train"]["allow_drift"]:
            errors.append(f"{_key(name)}={show(new)}: {run_id} ran with {show(old)} up to its checkpoint at "
                          f"step {step}, and this changes its numbers: set it back, or add "
                          "train.allow_drift=true to resume with it anyway (recorded in run.json)")
            continue
        records.append({"step": step, "key": _key(name), "from": old, "to": new, "alters_numbers": alters})
    if errors:
        raise ConfigError(errors)
    return records


def _data_changed(then: dict, now: dict, step: int, run_id: str) -> str:
    def looks(f):
        return f"{f['size']:,} bytes, sample sha256 {f['sha256'][:12]}" if f else "missing"

    changed = [name for name in sorted(set(then) | set(now)) if then.get(name) != now.get(name)]
    what = "; ".join(f"{name} was {looks(then.get(name))}, is {looks(now.get(name))}" for name in changed)
    return (f"data: {' and '.join(changed)} changed since {run_id} started ({what}): its checkpoint at "
            f"step {step} was trained on the old data; restore it, or move the run folder away to start over")


def logged_steps(progress: dict, log_every: int) -> list[int]:
    """The steps a run has written rows for, up to its checkpoint: step 0 (the first evaluation)
    and each step that was a multiple of log_every when it ran (`log_every`: the run's value when
    its checkpoint does not record it)."""
    changes = [d for d in progress.get("drift", []) if d["key"] == "train.log_every"]
    every = changes[0]["from"] if changes else (progress.get("execution") or {}).get("log_every", log_every)
    steps = [0]
    for step in range(1, progress["step"] + 1):
        while changes and changes[0]["step"] < step:  # a change at a resume from step s rules s+1 on
            every = changes.pop(0)["to"]
        if step % every == 0:
            steps.append(step)
    return steps
