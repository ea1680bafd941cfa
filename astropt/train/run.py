"""One run: train a prepared job to its outcome, or (`run_training`) a whole run from config to
MLflow record, for tests, benchmarks and notebooks. Sweeps and the train command go through
`astropt.sweep`, which adds progress, a watchdog and clean stopping."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from astropt.config import ResourcesConfig, TrackingConfig, TrainConfig
from astropt.record import (
    Metric,
    Param,
    Role,
    Status,
    Tag,
    close_run,
    ensure_experiment,
    log_params,
    make_client,
    open_run,
)
from astropt.spool import spool_folder, write_spool
from astropt.train.job import WorkerJob
from astropt.train.plan import TrainPlan, make_plan
from astropt.train.trainer import RunData, build_trainer, worker_job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as its rank 0 reported it."""

    run_id: str
    status: Status
    final_val_loss: float | None = None
    tokens_seen: int | None = None
    steps: int = 0
    wall_s: float = 0.0


def train(
    job: WorkerJob, resources: ResourcesConfig, storage_path: str, max_failures: int
) -> Outcome:
    """Fit the job's trainer; its outcome from what rank 0's loop returned."""
    started = time.perf_counter()
    result = build_trainer(job, resources, storage_path, max_failures).fit()
    returned = result.return_value or {}
    finished = not returned.get("diverged", True)
    loss, tokens = returned.get(Metric.FINAL_VAL_LOSS), returned.get(Metric.FINAL_TOKENS_SEEN)
    return Outcome(
        run_id=job.run_id,
        status=Status.FINISHED if finished else Status.DIVERGED,
        final_val_loss=loss,
        tokens_seen=None if tokens is None else int(tokens),
        steps=int(returned.get("step", 0)),
        wall_s=time.perf_counter() - started,
    )


def run_params(cfg: TrainConfig, plan: TrainPlan, resources: ResourcesConfig) -> dict:
    """What a run's MLflow record holds as params: its whole resolved configuration, flat, and
    its plan."""
    flat = _flatten(cfg.model_dump(mode="json", exclude={"keep_steps"}))
    return (
        flat
        | plan.model_dump(mode="json")
        | {
            Param.PRESET: cfg.model.name,
            Param.N_PARAMS: plan.n_params,
            Param.TOKENS_BUDGET: cfg.tokens,
            Param.UNIQUE_TOKENS: plan.unique_tokens,
            Param.GLOBAL_BATCH_TOKENS: plan.global_batch_tokens,
            Param.WORLD_SIZE: resources.workers,
            Param.DATA_TRAIN: cfg.train_uri,
            Param.DATA_VAL: cfg.val_uri,
        }
    )


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def close_or_spool(
    tracking: TrackingConfig, run_id: str, run_dir: str, status: Status, tags: dict
) -> None:
    """Write the run's final status; with MLflow away, spool it for `astropt.spool upload`."""
    try:
        close_run(make_client(tracking.uri), run_id, status, tags)
    except Exception as error:
        path = write_spool(
            spool_folder(run_dir), run_id, [], {Tag.STATUS: status} | tags, part=".status"
        )
        log.error(
            "run %s ended %s; MLflow could not be told (%s): kept in %s",
            run_id,
            status,
            error,
            path,
        )


def run_training(
    cfg: TrainConfig,
    resources: ResourcesConfig,
    tracking: TrackingConfig,
    *,
    name: str,
    storage_path: str,
    max_failures: int = 2,
    resume_from: str | None = None,
) -> Outcome:
    """Train `cfg` as the MLflow run `name` and record it; a finished run is not trained again.
    `cfg` holds fixed values (a number for the batch and the
    learning rate); the data must have been checked (`check_data`)."""
    data = RunData.read(cfg.train_uri, cfg.val_uri)
    plan = make_plan(cfg, resources.workers, data.facts)
    client = make_client(tracking.uri)
    experiment_id = ensure_experiment(client, tracking.experiment)
    run_id, status = open_run(client, experiment_id, name, role=Role.CELL)
    if status is not None and status.done:
        return Outcome(run_id=run_id, status=status)
    log_params(client, run_id, run_params(cfg, plan, resources))
    job = worker_job(
        cfg,
        plan,
        data,
        resources,
        name=name,
        run_id=run_id,
        storage_path=storage_path,
        tracking_uri=tracking.uri,
        tracking_wait_s=tracking.final_wait_s,
        resume_from=resume_from,
        in_process=resources.trains_in_process(local_cluster=True),
    )
    try:
        outcome = train(job, resources, storage_path, max_failures)
    except BaseException as error:  # a failed fit, a bad path, Ctrl-C: never left "running"
        why = {Tag.ERROR: describe_failure(error)}
        close_or_spool(tracking, run_id, job.run_dir, Status.FAILED, why)
        raise
    close_or_spool(tracking, run_id, job.run_dir, outcome.status, {})
    return outcome


def describe_failure(error: BaseException, limit: int = 4000) -> str:
    """What went wrong, in words a user can act on: each failed worker's own exception (its
    last line, e.g. `CheckpointWriteError: ... could not be written to PATH: ...`), else the
    error's message; cut to fit an MLflow tag."""
    while getattr(error, "cause", None) is not None and error.cause is not error:  # Ray wrapper
        error = error.cause
    failures = getattr(error, "worker_failures", None) or {}
    lines = [f"rank {rank}: {_last_line(failures[rank])}" for rank in sorted(failures)]
    text = "\n".join(lines) or f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def _last_line(error: BaseException) -> str:
    """A worker's exception arrives as text with its traceback: the last line names it."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__
