"""Learning-rate schedules as pure functions of the step, so a resumed run needs no schedule state.

`step` is the 0-based index of the optimizer step about to be taken. Every shape starts with a
linear warmup to the peak lr; then cosine decays to `min_lr_ratio * peak` at the last step,
`constant` stays at the peak, and `wsd` (warmup-stable-decay) holds the peak and cools down to
the minimum over the last `cooldown` of the run, linearly or as 1 - sqrt (Hägele et al. 2024,
arXiv 2405.18392). The stable part of a wsd run does not depend on its length, which is what
lets one run branch into cooldowns at several budgets (runners/branches.py).
"""

from __future__ import annotations

import math


def lr_at(step: int, peak: float, total_steps: int, warmup_steps: int, schedule: str,
          min_lr_ratio: float = 0.0, cooldown: float = 0.2, shape: str = "linear") -> float:
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    floor = peak * min_lr_ratio
    if schedule == "constant":
        return peak
    if schedule == "cosine":
        span = max(1, total_steps - 1 - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return floor + 0.5 * (1 + math.cos(math.pi * progress)) * (peak - floor)
    if schedule == "wsd":
        decay_start = cooldown_start(total_steps, cooldown)
        if step < decay_start:
            return peak
        progress = min(1.0, (step - decay_start + 1) / (total_steps - decay_start))
        left = 1 - progress if shape == "linear" else 1 - math.sqrt(progress)
        return floor + left * (peak - floor)
    raise ValueError(f"unknown schedule {schedule!r}")


def cooldown_start(total_steps: int, cooldown: float) -> int:
    """The first step of a wsd run's cooldown (at least its last step cools down)."""
    return total_steps - max(1, int(round(cooldown * total_steps)))


def budget_lr(budget: dict, step: int, peak: float) -> float:
    """The lr at `step` of a run with this resolved budget section, from the peak `peak`."""
    return lr_at(step, peak, budget["steps"], budget["warmup_steps"], budget["schedule"],
                 budget["min_lr_ratio"], budget["cooldown"], budget["cooldown_shape"])
