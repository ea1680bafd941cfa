"""What the sweep tells its user while it runs: one line per event, and an ETA from measured rates.

The ETA models a cell's wall time as a fixed start-up cost plus its own training FLOPs (with
attention) at the sweep's measured rate: both measured on the cells done so far (start-up: from
the trial's start to the run's first training heartbeat), before that taken from the running
cells' heartbeats, and before any of that from the dry run's estimate.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from astropt.heartbeat import Beat, Phase


@dataclass(frozen=True)
class Done:
    """A finished (or failed) run of this sweep, as measured."""

    flops: float  # its own training FLOPs
    wall_s: float
    startup_s: float


@dataclass
class Estimator:
    """Seconds left, from the runs done so far and the heartbeats of those running."""

    prior_rate: float  # FLOP/s the dry run assumed
    prior_startup_s: float
    concurrency: int = 1
    done: list[Done] = field(default_factory=list)

    def rate(self, beats: Mapping[str, Beat], flops_per_token: Mapping[str, float]) -> float:
        """Training FLOP/s: measured on finished runs, else live, else the prior."""
        trained = [(d.flops, d.wall_s - d.startup_s) for d in self.done if d.wall_s > d.startup_s]
        if trained:
            return sum(f for f, _ in trained) / sum(s for _, s in trained)
        live = [
            beat.tokens_per_s * flops_per_token[name]
            for name, beat in beats.items()
            if beat.tokens_per_s and name in flops_per_token
        ]
        return statistics.median(live) if live else self.prior_rate

    def startup_s(self) -> float:
        measured = [d.startup_s for d in self.done]
        return statistics.median(measured) if measured else self.prior_startup_s

    def seconds_left(
        self,
        pending: Mapping[str, float],
        running: Mapping[str, tuple[float, float]],
        beats: Mapping[str, Beat],
        flops_per_token: Mapping[str, float],
    ) -> float:
        """`pending`: own FLOPs of each run not started; `running`: (own FLOPs, seconds since
        its start) of each run in progress."""
        rate, startup = self.rate(beats, flops_per_token), self.startup_s()
        total = sum(startup + flops / rate for flops in pending.values())
        for name, (flops, elapsed) in running.items():
            beat = beats.get(name)
            share = beat.step / beat.steps if beat and beat.steps and beat.step else 0.0
            started = beat is not None and beat.phase in (Phase.TRAINING, Phase.FINISHING)
            total += (0.0 if started else max(0.0, startup - elapsed)) + flops * (1 - share) / rate
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
