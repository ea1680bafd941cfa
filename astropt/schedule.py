"""Learning-rate schedules as multipliers of the peak learning rate, indexed by optimizer step."""

from __future__ import annotations

import math


def cosine_multiplier(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay that reaches `min_ratio` at the last step exactly.

    `step` is the 0-based index of the optimizer step about to be taken, so the last step
    (`total_steps - 1`) runs at `min_ratio` and the schedule ends exactly at the token budget.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
