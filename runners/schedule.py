"""Learning-rate schedules as pure functions of the step, so a resumed run needs no schedule state.

`step` is the 0-based index of the optimizer step about to be taken. Every shape starts with a
linear warmup to the peak lr; then cosine decays to `min_lr_ratio * peak` at the last step,
`constant` stays at the peak, and `wsd` (warmup-stable-decay) holds the peak and decays linearly
to the minimum over the last `decay_fraction` of the run.
"""

from __future__ import annotations

import math


def lr_at(step: int, peak: float, total_steps: int, warmup_steps: int, schedule: str,
          min_lr_ratio: float = 0.0, decay_fraction: float = 0.2) -> float:
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
        decay_steps = max(1, int(round(decay_fraction * total_steps)))
        decay_start = total_steps - decay_steps
        if step < decay_start:
            return peak
        progress = min(1.0, (step - decay_start + 1) / decay_steps)
        return peak + progress * (floor - peak)
    raise ValueError(f"unknown schedule {schedule!r}")
