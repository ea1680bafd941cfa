"""What the sweep tells its user while it runs: one line per event, and an ETA from measured rates.

The ETA models a run's time as a fixed cost plus its own tokens at a cost per token that grows
with the model's FLOPs per token F: `start_s + tokens x (a + F / R)`. `a` (the per-token work
that does not scale with the model: data, patches, the optimizer's bookkeeping) and `R` (the
FLOP rate) start from a short calibration of the grid's smallest and largest models on this
machine (or, on GPUs, from their peak), and are refitted on the runs done as the sweep goes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from astropt.heartbeat import Beat, Phase


@dataclass(frozen=True)
class Done:
    """A finished (or failed) run of this sweep: its own tokens, FLOPs per token and time."""

    tokens: float
    flops_per_token: float
    wall_s: float


@dataclass(frozen=True)
class Costs:
    """Seconds per run: `start_s + tokens * (per_token_s + flops_per_token / flops_per_s)`."""

    start_s: float
    per_token_s: float
    flops_per_s: float

    def seconds(self, tokens: float, flops_per_token: float) -> float:
        return self.start_s + tokens * self.per_token_s_at(flops_per_token)

    def per_token_s_at(self, flops_per_token: float) -> float:
        return self.per_token_s + flops_per_token / self.flops_per_s


@dataclass
class Estimator:
    """Seconds left, from the prior costs refined by the runs done so far."""

    prior: Costs
    concurrency: int = 1
    done: list[Done] = field(default_factory=list)

    def costs(self) -> Costs:
        """The prior with its per-token costs refitted to the runs done: both of them once two
        model sizes are done, else only the part that does not scale with the model."""
        start = self.prior.start_s
        rows = [(d.tokens, d.flops_per_token, d.wall_s - start) for d in self.done if d.tokens]
        if not rows:
            return self.prior
        tokens, flops, seconds = (
            np.array(column, dtype=float) for column in zip(*rows, strict=True)
        )
        if np.unique(flops).size >= 2:
            design = np.stack([tokens, tokens * flops], axis=1)
            (per_token, per_flop), *_ = np.linalg.lstsq(design, seconds, rcond=None)
            if per_token >= 0 and per_flop > 0:
                return Costs(start, float(per_token), 1.0 / float(per_flop))
        rest = (seconds - tokens * flops / self.prior.flops_per_s).sum() / tokens.sum()
        return Costs(start, max(0.0, float(rest)), self.prior.flops_per_s)

    def seconds_left(
        self,
        pending: Mapping[str, tuple[float, float]],
        running: Mapping[str, tuple[float, float, float]],
        beats: Mapping[str, Beat],
    ) -> float:
        """`pending`: (own tokens, FLOPs per token) of each run not started; `running`: (own
        tokens, FLOPs per token, seconds since its start) of each run in progress."""
        costs = self.costs()
        total = sum(costs.seconds(tokens, flops) for tokens, flops in pending.values())
        for name, (tokens, flops, elapsed) in running.items():
            beat = beats.get(name)
            share = beat.step / beat.steps if beat and beat.steps and beat.step else 0.0
            started = beat is not None and beat.phase in (Phase.TRAINING, Phase.FINISHING)
            starting = 0.0 if started else max(0.0, costs.start_s - elapsed)
            total += starting + tokens * (1 - share) * costs.per_token_s_at(flops)
        return total / self.concurrency


def minutes(seconds: float) -> str:
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def status_line(
    elapsed_s: float, counts: Mapping[str, int], eta_s: float | None, event: str
) -> str:
    """`[  3.2 min] cells 4/12 done, 1 running, 7 pending, 0 failed; ETA 8.1 min | event`"""
    eta = "?" if eta_s is None else minutes(eta_s)
    return (
        f"[{elapsed_s / 60:5.1f} min] cells {counts['done']}/{counts['total']} done, "
        f"{counts['running']} running, {counts['pending']} pending, {counts['failed']} "
        f"failed/diverged; ETA {eta} | {event}"
    )


def beat_line(name: str, beat: Beat, now: float | None = None) -> str:
    """What one running run is doing: its phase, or its step, loss and speed."""
    if beat.phase != Phase.TRAINING:
        since = (now or time.time()) - beat.at
        return f"{name}: {beat.phase} ({since:.0f} s)"
    loss = "" if beat.loss is None else f", loss {beat.loss:.4f}"
    speed = "" if beat.tokens_per_s is None else f", {beat.tokens_per_s:,.0f} tok/s"
    return f"{name}: step {beat.step}/{beat.steps}{loss}{speed}"
