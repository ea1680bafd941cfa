"""Ray Tune runs the sweep's runs (cells and trunks): each is a trial that trains it.

This process, the sweep's driver, is the one that writes every run's status (`Driver`, a Tune
callback): pending when the sweep opens it, running when its trial starts, then finished,
diverged, failed (with each failed worker's own error, or the watchdog's reason and the phase
it was stuck in) or interrupted. Each trial runs a `Watchdog` beside its training: a run that
makes no progress for too long is stopped, its reason left on the heartbeat board.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import ray
from ray import tune

from astropt.config import TrackingConfig, WatchdogConfig
from astropt.heartbeat import Phase, snapshot
from astropt.probe import ProbeOptions, probe_run
from astropt.record import Role, Status, Tag, make_client
from astropt.sweep import branching
from astropt.sweep.cells import Cell
from astropt.sweep.grid import ProbeStep
from astropt.train.run import train
from astropt.train.trainer import RunData, run_dir, worker_job

log = logging.getLogger(__name__)
BRANCH_WAIT_S = 7 * 24 * 3600.0  # a branch waits this long at most for its trunk's checkpoint
PROGRESS_EVERY_S = 30.0
WATCH_EVERY_S = 2.0
STALLED_EXIT = 3


@dataclass(frozen=True)
class RunJob:
    """What one trial needs: the run, its MLflow run, its data, where to record."""

    cell: Cell
    run_id: str
    data: RunData
    tracking: TrackingConfig
    storage: str
    max_failures: int
    board: ray.actor.ActorHandle
    in_process: bool
    probe: ProbeStep | None = None

    @property
    def folder(self) -> str:
        return run_dir(self.storage, self.cell.name)

    @property
    def trunk_folder(self) -> str | None:
        return None if self.cell.trunk is None else run_dir(self.storage, self.cell.trunk)


class Watchdog(threading.Thread):
    """Stops this trial's process when its run makes no progress for too long: before its
    first step `first_step_s`; after, `step_factor` x its slowest step (at least `min_s`). The
    reason goes to the board first, for the driver to record."""

    def __init__(self, board, run: str, limits: WatchdogConfig, exit: Callable = os._exit):
        super().__init__(daemon=True, name=f"watchdog {run}")
        self.board, self.run_name, self.limits, self.exit = board, run, limits, exit
        self.stopped = threading.Event()
        self.since = time.time()

    def run(self) -> None:
        while not self.stopped.wait(WATCH_EVERY_S):
            beat = snapshot(self.board).beats.get(self.run_name)
            message = self.verdict(beat, time.time())
            if message is not None:
                ray.get(self.board.stall.remote(self.run_name, message))
                log.error("%s: %s", self.run_name, message)
                self.exit(STALLED_EXIT)
                return

    def verdict(self, beat, now: float) -> str | None:
        """Why the run counts as stalled at `now`, or None."""
        step, phase = (0, Phase.WORKER_START) if beat is None else (beat.step, beat.phase)
        last = self.since if beat is None else max(beat.step_at, self.since)
        if step == 0:
            limit = self.limits.first_step_s
        else:
            limit = max(self.limits.min_s, self.limits.step_factor * beat.slowest_step_s)
        idle = now - last
        if idle <= limit:
            return None
        return f"no progress since step {step} for {idle / 60:.1f} min; last phase: {phase}"

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()

    def __enter__(self) -> Watchdog:
        self.start()
        return self


def run_trial(config: dict, jobs: dict[str, RunJob]) -> None:
    """Tune trial: train one run (a branch first waits for its trunk) and report its outcome."""
    job = jobs[config["cell"]]
    cell = job.cell
    resume_from = None
    if cell.trunk is not None:
        resume_from = branching.wait_for_branch_point(
            cell.trunk, job.trunk_folder, cell.branch_step, BRANCH_WAIT_S
        )
    worker = worker_job(
        cell.train,
        cell.plan,
        job.data,
        cell.resources,
        name=cell.name,
        run_id=job.run_id,
        storage_path=job.storage,
        tracking_uri=job.tracking.uri,
        tracking_wait_s=job.tracking.final_wait_s,
        resume_from=resume_from,
        board=job.board,
        in_process=job.in_process,
    )
    with Watchdog(job.board, cell.name, cell.train.training.watchdog):
        outcome = train(worker, cell.resources, job.storage, job.max_failures)
    if job.probe is not None and cell.role == Role.CELL and outcome.status == Status.FINISHED:
        _probe(job)
    tune.report(
        {
            "status": str(outcome.status),
            "final_val_loss": outcome.final_val_loss or 0.0,
            "wall_s": outcome.wall_s,
        }
    )


def _probe(job: RunJob) -> None:
    """Probe the finished cell's embeddings (once: a cell already probed is left alone)."""
    client = make_client(job.tracking.uri)
    if Tag.PROBE_DONE in client.get_run(job.run_id).data.tags:
        return
    probe_run(
        job.tracking.uri,
        job.run_id,
        data_uri=job.cell.train.val_uri,
        targets=job.probe.targets,
        max_images=job.probe.max_images,
        options=ProbeOptions(folds=job.probe.folds),
    )
    client.set_tag(job.run_id, Tag.PROBE_DONE, "1")
