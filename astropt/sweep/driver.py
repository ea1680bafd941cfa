"""The sweep's driver: Ray Tune schedules the runs; `Driver` writes their status and progress.

A trial's status transitions are written here and only here (this one process): running when
it starts, its outcome when it completes, failed with its reason when it errors for good,
interrupted when the user stops the sweep. Runs finished earlier never reach Tune.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cloudpickle
import ray
from ray import tune

from astropt.cluster import TRIAL_DRIVER
from astropt.heartbeat import Snapshot, snapshot
from astropt.record import Role, Status, Tag, make_client, mark
from astropt.sweep import branching
from astropt.sweep.progress import Done, Estimator, beat_line, status_line
from astropt.sweep.runner import RunJob, run_trial
from astropt.train.run import close_or_spool, describe_failure


@dataclass
class Driver(tune.Callback):
    """Statuses in MLflow and one readable line per event (plus the running runs every
    `every_s`), with an ETA from measured rates."""

    jobs: dict[str, RunJob]
    estimator: Estimator
    every_s: float = 30.0
    started: float = field(default_factory=time.time)
    begun: dict[str, float] = field(default_factory=dict)
    ended: dict[str, Status] = field(default_factory=dict)
    last_print: float = 0.0

    # -- Tune's events -------------------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        name = trial.config["cell"]
        job = self.jobs[name]
        self.begun[name] = time.time()
        ray.get(job.board.start.remote(name))
        if job.cell.role == Role.TRUNK:
            branching.clear_failed(job.folder)
        self._safely(lambda: mark(make_client(job.tracking.uri), job.run_id, Status.RUNNING))
        self._print(f"start {name}")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        name = trial.config["cell"]
        self._print(f"retrying {name}: {self._why(trial)}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        name = trial.config["cell"]
        job, result = self.jobs[name], trial.last_result
        status = Status(result.get("status", Status.FAILED))
        self._close(job, status, {})
        self._measure(name, time.time() - self.begun[name])
        if job.cell.trunk is not None:
            trunk = self.jobs.get(job.cell.trunk)
            if trunk is not None:
                self._safely(lambda: self._inherit(job, trunk))
        loss = result.get("final_val_loss")
        self._print(f"{status} {name}" + (f": final val loss {loss:.4f}" if loss else ""))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        name = trial.config["cell"]
        job = self.jobs[name]
        news = self._snapshot()
        why = news.stalls.get(name) or self._why(trial)
        beat = news.beats.get(name)
        tags = {Tag.ERROR: why} | ({Tag.PHASE: beat.phase} if beat is not None else {})
        self._close(job, Status.FAILED, tags)
        if job.cell.role == Role.TRUNK:
            branching.mark_failed(job.folder)
        self._measure(name, time.time() - self.begun.get(name, time.time()))
        self._print(f"failed {name}\n  {why}")

    def on_step_begin(self, iteration, trials, **info) -> None:
        if time.time() - self.last_print >= self.every_s and self.running:
            news = self._snapshot()
            lines = [beat_line(n, news.beats[n]) for n in self.running if n in news.beats]
            self._print("; ".join(lines) or "starting", news)

    # -- what the driver knows -----------------------------------------------------------------
    @property
    def running(self) -> list[str]:
        return [n for n in self.begun if n not in self.ended]

    def interrupt(self) -> list[str]:
        """Record every running run as interrupted (resumable); returns their names."""
        names = self.running
        for name in names:
            self._close(self.jobs[name], Status.INTERRUPTED, {})
        return names

    def _close(self, job: RunJob, status: Status, tags: dict) -> None:
        self.ended[job.cell.name] = status
        close_or_spool(job.tracking, job.run_id, job.folder, status, tags)

    def _inherit(self, job: RunJob, trunk: RunJob) -> None:
        client = make_client(job.tracking.uri)
        branching.inherit_history(client, trunk.run_id, job.run_id, job.cell.branch_step)
        branches = [j for j in self.jobs.values() if j.cell.trunk == trunk.cell.name]
        if all(self.ended.get(j.cell.name, Status.PENDING).done for j in branches):
            branching.release_branch_points(trunk.folder, trunk.cell.train.keep_steps)

    def _measure(self, name: str, wall_s: float) -> None:
        cell = self.jobs[name].cell
        self.estimator.done.append(
            Done(cell.own_tokens, cell.plan.flops_per_token_attention, wall_s)
        )

    def _snapshot(self) -> Snapshot:
        return snapshot(next(iter(self.jobs.values())).board)

    @staticmethod
    def _why(trial) -> str:
        """The trial's error, from the files Tune has just written beside this driver."""
        pickled, text = trial.pickled_error_file, trial.error_file
        if pickled and Path(pickled).is_file():
            with open(pickled, "rb") as handle:
                return describe_failure(cloudpickle.load(handle))
        if text and Path(text).is_file():
            lines = [line for line in Path(text).read_text().splitlines() if line.strip()]
            return lines[-1] if lines else "unknown error"
        return "unknown error"

    def seconds_left(self, snapshot: Snapshot) -> float:
        now = time.time()
        size = {n: (j.cell.own_tokens, j.cell.plan.flops_per_token_attention)
                for n, j in self.jobs.items()}  # fmt: skip
        pending = {n: size[n] for n in self.jobs if n not in self.begun}
        running = {n: (*size[n], now - self.begun[n]) for n in self.running}
        return self.estimator.seconds_left(pending, running, snapshot.beats)

    def _print(self, event: str, snapshot: Snapshot | None = None) -> None:
        self.last_print = time.time()
        failed = sum(s in (Status.FAILED, Status.DIVERGED) for s in self.ended.values())
        counts = {
            "total": len(self.jobs),
            "done": len(self.ended),
            "running": len(self.running),
            "pending": len(self.jobs) - len(self.begun),
            "failed": failed,
        }
        eta = self.seconds_left(snapshot or self._snapshot())
        print(status_line(self.last_print - self.started, counts, eta, event), flush=True)

    @staticmethod
    def _safely(action) -> None:
        try:
            action()
        except Exception as error:  # MLflow away: the final status is spooled at the end
            print(f"  (MLflow: {type(error).__name__}: {error})", flush=True)


def trial_resources(job: RunJob) -> dict[str, float]:
    """A trial that trains in its own process holds its worker's CPUs; one that drives a
    worker group only the `trial_driver` resource (a CPU held by it would starve small hosts)."""
    cpus = job.cell.resources.cpus_per_worker if job.in_process else 0
    return {"CPU": cpus, TRIAL_DRIVER: 1}


def tuner_for(
    jobs: Iterable[RunJob],
    driver: Driver,
    *,
    max_concurrent: int,
    name: str,
    storage: str,
    max_failures: int,
) -> tune.Tuner:
    """Every job as a Tune trial, FIFO in the given order, no early stopping."""
    by_name = {job.cell.name: job for job in jobs}
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, jobs=by_name),
        lambda config: trial_resources(by_name[config["cell"]]),
    )
    return tune.Tuner(
        trainable,
        param_space={"cell": tune.grid_search(list(by_name))},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=max_concurrent,
            # A trial's process trains a one-worker CPU run itself (Ray Train's local mode) or
            # drives a worker group; reusing it saves each run after the first a process start
            # and the import of this stack.
            reuse_actors=True,
            trial_name_creator=lambda trial: trial.config["cell"],
            trial_dirname_creator=lambda trial: trial.config["cell"],
        ),
        run_config=tune.RunConfig(
            name=f"tune-{name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=storage,
            callbacks=[driver],
            failure_config=tune.FailureConfig(max_failures=max_failures),
            verbose=0,
        ),
    )
