"""Heartbeats: where each running cell is (phase, step, loss, speed), for progress and the watchdog.

Rank 0 of a run sends a beat whenever its phase changes and at every log point, to a small Ray
actor the driver owns (`Board`): fire-and-forget, so training never waits on it. The driver
reads the board to print progress and estimate what is left, and each trial's watchdog reads it
to notice a run that has stopped making progress.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


class Phase:
    WORKER_START = "worker start"
    ENGINE_INIT = "engine init"
    FIRST_BATCH = "first batch"
    TRAINING = "training"
    FINISHING = "finishing"


@dataclass(frozen=True)
class Beat:
    """The latest news of one run."""

    phase: str
    step: int = 0
    steps: int = 0
    loss: float | None = None
    tokens_per_s: float | None = None
    at: float = field(default_factory=time.time)
    step_at: float = field(default_factory=time.time)  # when `step` was first reported
    slowest_step_s: float = 0.0  # between two log points, per step


@dataclass(frozen=True)
class Snapshot:
    beats: dict[str, Beat]
    stalls: dict[str, str]  # run -> why its watchdog stopped it
    startup: dict[str, float]


@ray.remote(num_cpus=0, max_concurrency=4)
class Board:
    """The latest beat of every run of a sweep, keyed by run name."""

    def __init__(self) -> None:
        self.beats: dict[str, Beat] = {}
        self.stalls: dict[str, str] = {}
        self.started: dict[str, float] = {}
        self.startup: dict[str, float] = {}  # seconds from start to the first training beat

    def beat(self, run: str, phase: str, step: int, steps: int, loss, tokens_per_s) -> None:
        now = time.time()
        last = self.beats.get(run)
        step_at, slowest = now, 0.0
        if last is not None:
            slowest = last.slowest_step_s
            if step == last.step:
                step_at = last.step_at
            elif step > last.step and last.phase == phase:
                slowest = max(slowest, (now - last.step_at) / (step - last.step))
        self.beats[run] = Beat(phase, step, steps, loss, tokens_per_s, now, step_at, slowest)
        if phase == Phase.TRAINING and run not in self.startup and run in self.started:
            self.startup[run] = now - self.started[run]

    def start(self, run: str) -> None:
        """A run's driver starts it: forget the beats of an earlier attempt."""
        self.beats[run] = Beat(Phase.WORKER_START)
        self.stalls.pop(run, None)
        self.startup.pop(run, None)
        self.started[run] = time.time()

    def stall(self, run: str, message: str) -> None:
        self.stalls[run] = message

    def snapshot(self) -> Snapshot:
        return Snapshot(dict(self.beats), dict(self.stalls), dict(self.startup))


def new_board() -> ray.actor.ActorHandle:
    """A board on this (the driver's) node: it goes when the driver goes, never with a worker
    node that is lost."""
    here = ray.get_runtime_context().get_node_id()
    return Board.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)
    ).remote()


def snapshot(board: ray.actor.ActorHandle) -> Snapshot:
    """The board's news; empty if the board cannot be reached (progress is not worth a crash)."""
    try:
        return ray.get(board.snapshot.remote(), timeout=30)
    except (ray.exceptions.RayError, TimeoutError):
        return Snapshot({}, {}, {})


class Heartbeat:
    """A run's sender of beats (rank 0); a no-op without a board."""

    def __init__(self, board: ray.actor.ActorHandle | None, run: str, steps: int) -> None:
        self.board, self.run, self.steps = board, run, steps
        self.phase = Phase.WORKER_START

    def __call__(
        self,
        phase: str | None = None,
        step: int = 0,
        loss: float | None = None,
        tokens_per_s: float | None = None,
    ) -> None:
        self.phase = phase or self.phase
        if self.board is not None:
            self.board.beat.remote(self.run, self.phase, step, self.steps, loss, tokens_per_s)
