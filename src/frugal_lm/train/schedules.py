"""Learning-rate schedule: linear warmup to the peak, then cosine down to a floor."""

from __future__ import annotations

import math


def learning_rate(step: int, total_steps: int, peak_lr: float, warmup_steps: int, floor: float) -> float:
    """LR for 0-based `step`: warmup reaches `peak_lr` at step `warmup_steps - 1`, then a cosine
    decays to `floor * peak_lr` at the last step (`total_steps - 1`) and stays there."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return peak_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
