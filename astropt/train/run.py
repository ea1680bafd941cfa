"""One run from start to record: prepare, open its MLflow run, fit the trainer, close the run."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from astropt.config import ResourcesConfig, TrackingConfig, TrainConfig
from astropt.tracking import ensure_experiment, log_params, make_client, open_run, set_tags
from astropt.train.trainer import PreparedRun, build_trainer, prepare

DONE = ("finished", "diverged")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: str
    final_val_loss: float | None
    tokens_seen: int | None
    wall_s: float
    skipped: bool = False


def run_training(
    cfg: TrainConfig,
    resources: ResourcesConfig,
    tracking: TrackingConfig,
    *,
    name: str,
    storage_path: str,
    parent_run_id: str | None = None,
    tags: dict[str, object] | None = None,
    callbacks: list | None = None,
    max_failures: int = 2,
    prepared: PreparedRun | None = None,
    resume_from: str | None = None,
) -> RunOutcome:
    """Train `cfg` as the MLflow run `name`; a run already finished is not trained again.

    Re-running the same name continues the same MLflow run and, through Ray's storage folder of
    the same name, the same checkpoints. `resume_from` starts from another run's checkpoint.
    The data must have been checked (`check_data`) by the caller.
    """
    started = time.perf_counter()
    run = prepared or prepare(cfg, resources)
    client = make_client(tracking.uri)
    experiment_id = ensure_experiment(client, tracking.experiment, None)
    run_tags = {"astropt.role": "cell", **(tags or {})}
    run_id, status = open_run(
        client, experiment_id, name, parent_run_id=parent_run_id, tags=run_tags
    )
    if status in DONE:
        return _outcome(client, run_id, started, skipped=True)
    log_params(client, run_id, run.params() | {"world_size": resources.workers})
    set_tags(client, run_id, {"astropt.status": "running"})
    trainer = build_trainer(
        run,
        resources,
        tracking=tracking,
        run_id=run_id,
        name=name,
        storage_path=storage_path,
        max_failures=max_failures,
        callbacks=callbacks,
        resume_from=resume_from,
    )
    try:
        result = trainer.fit()
    except BaseException as error:  # a failed fit, a bad path, Ctrl-C: never "running"
        _close(client, run_id, "failed", error)
        raise
    outcome = _outcome_of(result.metrics or {}, run_id, started)
    _close(client, run_id, outcome.status)
    return outcome


def _outcome_of(metrics: dict, run_id: str, started: float) -> RunOutcome:
    """From what the workers reported to Ray: a run that stopped before its final evaluation
    without an error has diverged (the loop's only early exit)."""
    finished = "final/val_loss" in metrics
    return RunOutcome(
        run_id=run_id,
        status="finished" if finished else "diverged",
        final_val_loss=metrics.get("final/val_loss"),
        tokens_seen=int(metrics["final/tokens_seen"]) if finished else None,
        wall_s=time.perf_counter() - started,
    )


def _close(client, run_id: str, status: str, error: BaseException | None = None) -> None:
    """Mark the MLflow run ended (with the error's message, if it failed); an unreachable
    server is reported, not fatal: the workers already spooled what it lacks."""
    tags: dict[str, object] = {"astropt.status": status}
    if error is not None:
        tags["astropt.error"] = describe_failure(error)
    try:
        set_tags(client, run_id, tags)
        client.set_terminated(run_id, "FINISHED" if status == "finished" else "FAILED")
    except Exception as error:
        log.error("run %s ended %s but MLflow could not be told: %s", run_id, status, error)


def _outcome(client, run_id: str, started: float, skipped: bool = False) -> RunOutcome:
    data = client.get_run(run_id).data
    loss = data.metrics.get("final/val_loss")
    tokens = data.metrics.get("final/tokens_seen")
    return RunOutcome(
        run_id=run_id,
        status=data.tags.get("astropt.status", "unknown"),
        final_val_loss=loss,
        tokens_seen=None if tokens is None else int(tokens),
        wall_s=time.perf_counter() - started,
        skipped=skipped,
    )


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
