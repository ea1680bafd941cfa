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


def constant_multiplier(step: int, warmup_steps: int) -> float:
    """Linear warmup to 1, then constant: the trunk of a warmup-stable-decay sweep."""
    return (step + 1) / warmup_steps if step < warmup_steps else 1.0


def cooldown_start(total_steps: int, cooldown_fraction: float) -> int:
    """First step of the cooldown: the last `cooldown_fraction` of the run decays."""
    return total_steps - max(1, round(cooldown_fraction * total_steps))


def wsd_multiplier(
    step: int,
    total_steps: int,
    warmup_steps: int,
    min_ratio: float,
    cooldown_fraction: float,
    shape: str = "linear",
) -> float:
    """Warmup-stable-decay (Hagele et al. 2024, arXiv 2405.18392): warmup, constant, cooldown.

    The cooldown covers the last `cooldown_fraction` of the steps and reaches `min_ratio` at the
    last step; `shape` is "linear" or "1-sqrt" (their best-performing shape). Before the cooldown
    the schedule equals `constant_multiplier`, which is what lets one constant-LR trunk serve as
    the start of every budget's run.
    """
    start = cooldown_start(total_steps, cooldown_fraction)
    if step < start:
        return constant_multiplier(step, warmup_steps)
    progress = (step - start + 1) / (total_steps - start)
    decay = progress if shape == "linear" else math.sqrt(progress)
    return 1.0 - (1.0 - min_ratio) * decay
