"""Ray Tune runs the grid: each cell is a trial whose function fits the cell's `TorchTrainer`.

Cells already finished (or diverged) in MLflow return at once; unfinished cells continue from
their last checkpoint in Ray storage (same run name, same storage path). So re-running a grid,
with or without --resume, trains only what is missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyarrow.fs as pafs
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from astropt.cluster import TRIAL_DRIVER
from astropt.config import ResourcesConfig, TrackingConfig
from astropt.data.schema import resolve
from astropt.probe import ProbeOptions, probe_run
from astropt.sweep.cells import Cell
from astropt.sweep.grid import ProbeStep
from astropt.tracking import set_tags
from astropt.train import checkpoint
from astropt.train.run import describe_failure, run_training
from astropt.train.trainer import PreparedRun

#: How often a branch looks for its trunk's checkpoint, and how long it waits at most.
BRANCH_POLL_S, BRANCH_WAIT_S = 5.0, 7 * 24 * 3600.0
FAILED_STEP = 0  # the marker "step 0" of a trunk means: this trunk failed


class TrunkFailed(RuntimeError):
    """A branch's trunk failed, so the branch cannot start."""


@dataclass(frozen=True)
class CellJob:
    """What one trial needs: the prepared run, where to record it, and (a branch) where from."""

    cell: Cell
    prepared: PreparedRun
    resources: ResourcesConfig
    tracking: TrackingConfig
    storage: str
    parent_run_id: str
    max_failures: int
    probe: ProbeStep | None = None

    @property
    def name(self) -> str:
        return self.cell.name

    def run_dir(self, name: str) -> str:
        return f"{self.storage.rstrip('/')}/{name}"


def _wait_for_trunk(job: CellJob) -> str:
    """The trunk checkpoint this branch starts from, once it is complete."""
    trunk_dir, step = job.run_dir(job.cell.trunk), job.cell.branch_step
    ready = checkpoint.ready_path(trunk_dir, step)
    failed = checkpoint.ready_path(trunk_dir, FAILED_STEP)
    deadline = time.time() + BRANCH_WAIT_S
    while time.time() < deadline:
        if _exists(failed):
            raise TrunkFailed(f"trunk {job.cell.trunk} failed; branch {job.name} cannot start")
        if _exists(ready):
            return f"{trunk_dir}/{checkpoint.folder_name(step)}"
        time.sleep(BRANCH_POLL_S)
    raise TimeoutError(f"branch {job.name}: no checkpoint at step {step} of {job.cell.trunk}")


def _exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def _flag_trunk(job: CellJob, failed: bool) -> None:
    """Set (or, when the trunk starts again, clear) the marker that stops its branches."""
    fs, path = resolve(checkpoint.ready_path(job.run_dir(job.name), FAILED_STEP))
    if failed:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path):
            pass
    elif fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_file(path)


def _probe(job: CellJob, run_id: str) -> None:
    """Probe the finished cell's embeddings (once: a cell already probed is left alone)."""
    client = MlflowClient(job.tracking.uri)
    if "astropt.probe.done" in client.get_run(run_id).data.tags:
        return
    probe_run(
        job.tracking.uri,
        run_id,
        data_uri=job.prepared.cfg.data.val,
        targets=job.probe.targets,
        max_images=job.probe.max_images,
        options=ProbeOptions(folds=job.probe.folds),
    )
    set_tags(client, run_id, {"astropt.probe.done": "1"})


def run_cell(config: dict, jobs: dict[str, CellJob]) -> None:
    """Tune trial: train one cell (or find it done) and report its outcome."""
    job = jobs[config["cell"]]
    cell, cfg = job.cell, job.prepared.cfg
    tags = {
        "astropt.role": cell.role,
        "astropt.size": cell.size,
        "astropt.tokens_budget": cfg.tokens,
        "astropt.seed": cfg.seed,
    }
    if cell.trunk:
        tags |= {"astropt.trunk": cell.trunk, "astropt.branch_step": cell.branch_step}
    if cell.role == "trunk":
        _flag_trunk(job, failed=False)
    try:
        outcome = run_training(
            cfg,
            job.resources,
            job.tracking,
            name=job.name,
            storage_path=job.storage,
            parent_run_id=job.parent_run_id,
            tags=tags,
            callbacks=[TuneReportCallback()],
            max_failures=job.max_failures,
            prepared=job.prepared,
            resume_from=_wait_for_trunk(job) if cell.trunk else None,
        )
    except Exception:
        if cell.role == "trunk":
            _flag_trunk(job, failed=True)
        raise
    if job.probe is not None and cell.role == "cell" and outcome.status == "finished":
        _probe(job, outcome.run_id)
    tune.report(
        {
            "status": outcome.status,
            "final/val_loss": outcome.final_val_loss or float("nan"),
            "skipped": float(outcome.skipped),
            "cell_wall_s": outcome.wall_s,
        }
    )


@dataclass
class SweepProgress(tune.Callback):
    """One readable line per event: cells done/running/pending/failed, speed and an ETA."""

    planned_flops: dict[str, float]
    started: float = field(default_factory=time.perf_counter)
    done: dict[str, str] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    flops_done: float = 0.0
    last_print: float = 0.0

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.running.add(trial.config["cell"])
        self._print(f"start {trial.config['cell']}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if time.perf_counter() - self.last_print > 30 and "tokens_per_s" in result:
            name = trial.config["cell"]
            loss = result.get("val/loss", result.get("train/loss", float("nan")))
            self._print(
                f"{name}: step {result.get('step')}, loss {loss:.4f}, "
                f"{result['tokens_per_s']:.0f} tok/s"
            )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, trial.last_result.get("status", "finished"))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        error = trial.get_pickled_error()
        self._finish(trial, "failed", "" if error is None else f"\n  {describe_failure(error)}")

    def _finish(self, trial, status: str, why: str = "") -> None:
        name = trial.config["cell"]
        self.running.discard(name)
        self.done[name] = status
        if not trial.last_result.get("skipped"):
            self.flops_done += self.planned_flops[name]
        loss = trial.last_result.get("final/val_loss", float("nan"))
        self._print(f"{status} {name}: final val loss {loss:.4f}{why}")

    def _print(self, event: str) -> None:
        self.last_print = time.perf_counter()
        elapsed = self.last_print - self.started
        total = len(self.planned_flops)
        failed = sum(s in ("failed", "diverged") for s in self.done.values())
        pending = total - len(self.done) - len(self.running)
        remaining = sum(f for n, f in self.planned_flops.items() if n not in self.done)
        rate = self.flops_done / elapsed if self.flops_done else 0.0
        eta = f"{remaining / rate / 60:.1f} min" if rate else "?"
        print(
            f"[{elapsed / 60:5.1f} min] cells {len(self.done)}/{total} done, "
            f"{len(self.running)} running, {pending} pending, {failed} failed/diverged; "
            f"ETA {eta} | {event}",
            flush=True,
        )


def run_cells(
    jobs: list[CellJob], cells: list[Cell], *, max_concurrent: int, sweep_name: str, storage: str
) -> tune.ResultGrid:
    """Run every cell as a Tune trial, FIFO, largest first, no early stopping."""
    progress = SweepProgress({c.name: c.own_flops for c in cells})
    by_name = {job.name: job for job in jobs}
    trainable = tune.with_resources(
        tune.with_parameters(run_cell, jobs=by_name), {"CPU": 0, TRIAL_DRIVER: 1}
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"cell": tune.grid_search(list(by_name))},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=max_concurrent,
            # A trial's actor only drives its cell's TorchTrainer; reusing it saves each cell
            # after the first a process start and the import of this stack (about 6 s on 2 cores).
            reuse_actors=True,
            trial_name_creator=lambda trial: trial.config["cell"],
            trial_dirname_creator=lambda trial: trial.config["cell"],
        ),
        run_config=tune.RunConfig(
            name=f"tune-{sweep_name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=storage,
            callbacks=[progress],
            verbose=0,
        ),
    )
    return tuner.fit()
