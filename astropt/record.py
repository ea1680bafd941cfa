"""The MLflow record of a sweep: every name in it, the run statuses, and the code that opens,
closes and searches runs and writes their metrics.

What the record holds (read by the sweep summary, the probes and `fit_scaling`):

- One experiment per grid, created to open in MLflow's model-training view. The sweep's parent
  run has role `sweep`; each cell is a child run (role `cell`) named by the cell; a branching
  sweep's trunks are child runs with role `trunk`; a scaling fit is a child run with role `fit`.
- A run's status tag is written by one process only: the driver that opened the run
  (`open_run`, `close_run`). Workers write metrics and the tags of where and how far they ran.
- Metrics are indexed by optimizer step, each (metric, step) written once (`MetricBuffer`).
  A branch's run starts with its trunk's history up to the branch step, tagged `INHERITED`.
- N = param `n_params` (non-embedding), D = metric `final/tokens_seen`, the loss the fits use
  = `final/val_loss`; compute both ways in `final/compute_6nd` and `final/compute_attention`.

This module imports MLflow and nothing heavier, so `fit_scaling` can use it without Ray or torch.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import requests
from mlflow.entities import Metric as MetricPoint
from mlflow.entities import Param as ParamEntry
from mlflow.entities import Run, RunTag, ViewType
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
MAX_BATCH = 1000  # MLflow's limit on entities per log_batch call
PAGE = 1000


class Role(StrEnum):
    SWEEP = "sweep"
    CELL = "cell"
    TRUNK = "trunk"
    FIT = "fit"


class Status(StrEnum):
    PENDING = "pending"  # planned by a sweep, not started yet
    RUNNING = "running"
    FINISHED = "finished"
    DIVERGED = "diverged"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # stopped by the user; a re-run continues it

    @property
    def done(self) -> bool:
        """Finished or diverged: a re-run leaves it alone."""
        return self in (Status.FINISHED, Status.DIVERGED)


class Tag(StrEnum):
    PARENT = "mlflow.parentRunId"
    EXPERIMENT_KIND = "mlflow.experimentKind"  # experiment tag: which view the UI opens
    ROLE = "astropt.role"
    CELL = "astropt.cell"
    STATUS = "astropt.status"
    ERROR = "astropt.error"  # why a run failed: each failed worker's own error
    PHASE = "astropt.phase"  # what a run was doing last: worker start, engine init, ...
    NODE = "astropt.node_id"  # rank 0's Ray node, set at every start
    STEPS_DONE = "astropt.steps_done"
    SIZE = "astropt.size"
    SEED = "astropt.seed"
    TOKENS_BUDGET = "astropt.tokens_budget"
    LR_MULTIPLIER = "astropt.lr_multiplier"
    TRUNK = "astropt.trunk"  # a branch: the trunk run it started from ...
    BRANCH_STEP = "astropt.branch_step"  # ... at this optimizer step
    INHERITED = "astropt.inherited_through"  # steps <= this were copied from the trunk's run
    GRID = "astropt.grid"
    GRID_HASH = "astropt.grid_hash"
    GIT = "astropt.git"
    PROBE_DONE = "astropt.probe.done"
    PROBE = "astropt.probe"  # prefix of the probe's own tags


class Param(StrEnum):
    """Params read across modules (the run logs more: its whole resolved configuration)."""

    PRESET = "preset"
    N_PARAMS = "n_params"  # non-embedding parameters: the N of the scaling law
    N_PARAMS_TOTAL = "n_params_total"
    TOKENS_BUDGET = "tokens_budget"
    UNIQUE_TOKENS = "unique_tokens"  # tokens in one pass over the training set
    LR = "lr"
    LR_MULTIPLIER = "lr_multiplier"
    SEED = "seed"
    DATA_TRAIN = "data_train"
    DATA_VAL = "data_val"
    WORLD_SIZE = "world_size"
    GLOBAL_BATCH_TOKENS = "global_batch_tokens"


class Metric(StrEnum):
    TRAIN_LOSS = "train/loss"
    VAL_LOSS = "val/loss"
    LR = "lr"
    TOKENS_SEEN = "tokens_seen"
    EPOCHS = "epochs"
    TOKENS_PER_S = "tokens_per_s"
    MFU = "mfu"
    FINAL_VAL_LOSS = "final/val_loss"
    FINAL_TOKENS_SEEN = "final/tokens_seen"
    FINAL_EPOCHS = "final/epochs"
    FINAL_COMPUTE_6ND = "final/compute_6nd"
    FINAL_COMPUTE_ATTENTION = "final/compute_attention"
    WORKER_START_S = "time/worker_start_s"
    ENGINE_INIT_S = "time/engine_init_s"
    FIRST_BATCH_S = "time/first_batch_s"
    EVAL_S = "time/eval_s"
    CHECKPOINT_S = "time/checkpoint_s"
    PEAK_RSS_MB = "peak_rss_mb"


#: The experiment view MLflow 3's UI opens (its default for an untagged experiment is GenAI).
MODEL_TRAINING_VIEW = "custom_model_development"

_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def scrub_uri(uri: str) -> str:
    """A URI with any user:password@ part removed, safe to log or print."""
    return _CREDENTIALS.sub(r"\g<scheme>", uri)


def default_tracking_uri(root: Path | None = None) -> str:
    """A local SQLite store under ./runs (MLflow 3 refuses a bare ./mlruns file store)."""
    path = (root or Path.cwd()) / "runs" / "mlflow.db"
    return f"sqlite:///{path.resolve()}"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a local SQLite store, else None."""
    prefix = "sqlite:///"
    return Path(tracking_uri.removeprefix(prefix)) if tracking_uri.startswith(prefix) else None


def make_client(tracking_uri: str) -> MlflowClient:
    if (db := sqlite_path(tracking_uri)) is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri)


class TrackingUnreachable(ConnectionError):
    """The MLflow tracking server does not answer."""


def require_reachable(tracking_uri: str, timeout_s: float = 10.0) -> None:
    """Fail fast, before any cell starts, when an MLflow server cannot be reached."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        response = requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s)
        response.raise_for_status()
    except requests.RequestException as error:
        raise TrackingUnreachable(
            f"tracking.uri: the MLflow server {scrub_uri(tracking_uri)} is not reachable "
            f"({type(error).__name__}); start it (mlflow server --host 127.0.0.1 ...) or fix "
            "the URI"
        ) from None


def _artifact_location(tracking_uri: str) -> str | None:
    """Beside a local SQLite store, `mlartifacts/`; elsewhere the server decides."""
    db = sqlite_path(tracking_uri)
    return None if db is None else (db.parent / "mlartifacts").resolve().as_uri()


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """Id of the experiment `name`, created (in the driver, never a worker) if missing, and
    tagged to open in MLflow's model-training view."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = _artifact_location(client.tracking_uri)
        experiment_id = client.create_experiment(name, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment_id)
        if experiment.tags.get(Tag.EXPERIMENT_KIND):
            return experiment_id
    client.set_experiment_tag(experiment_id, Tag.EXPERIMENT_KIND, MODEL_TRAINING_VIEW)
    return experiment_id


def find_experiment(client: MlflowClient, name: str) -> str | None:
    """Id of an existing, active experiment `name`, else None."""
    found = client.get_experiment_by_name(name)
    return None if found is None or found.lifecycle_stage == "deleted" else found.experiment_id


def experiment_names(client: MlflowClient) -> list[str]:
    return [e.name for e in client.search_experiments()]


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, object]) -> None:
    """Log params that the run does not hold yet (MLflow refuses to change a logged param)."""
    held = client.get_run(run_id).data.params
    fresh = [ParamEntry(k, str(v)) for k, v in params.items() if k not in held]
    for start in range(0, len(fresh), 100):
        client.log_batch(run_id, params=fresh[start : start + 100])


def set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, object]) -> None:
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def search_runs(
    client: MlflowClient,
    experiment_id: str,
    role: Role,
    *,
    parent_run_id: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> list[Run]:
    """Every active run of `role` (under `parent_run_id`, with the `extra` tag values), newest
    first, across result pages."""
    clauses = {Tag.ROLE: role, **({Tag.PARENT: parent_run_id} if parent_run_id else {})}
    clauses |= dict(extra or {})
    query = " and ".join(f"tags.`{key}` = '{value}'" for key, value in clauses.items())
    return list(_pages(client, experiment_id, query))


def _pages(client: MlflowClient, experiment_id: str, query: str) -> Iterator[Run]:
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=query,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=PAGE,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            return


def find_sweep_run(client: MlflowClient, experiment_id: str, grid: str | None = None) -> str | None:
    """The (newest) sweep parent run of the experiment, or of the grid named `grid`."""
    extra = {Tag.GRID: grid} if grid else None
    runs = search_runs(client, experiment_id, Role.SWEEP, extra=extra)
    return runs[0].info.run_id if runs else None


def open_run(
    client: MlflowClient,
    experiment_id: str,
    name: str,
    *,
    role: Role = Role.CELL,
    parent_run_id: str | None = None,
    tags: Mapping[str, object] | None = None,
    status: Status = Status.RUNNING,
) -> tuple[str, Status | None]:
    """The run named `name` (under `parent_run_id` when given), created if missing; returns
    (run id, the status it had, None if new). A re-run reuses its run, never duplicates it; a
    run that is not done gets `status` again."""
    extra = {Tag.CELL: name}
    found = search_runs(client, experiment_id, role, parent_run_id=parent_run_id, extra=extra)
    if found:
        run = found[0]
        held = run_status(run)
        if held is None or not held.done:
            mark(client, run.info.run_id, status)
        return run.info.run_id, held
    all_tags = {Tag.CELL: name, Tag.ROLE: role, Tag.STATUS: status, **(tags or {})}
    if parent_run_id:
        all_tags[Tag.PARENT] = parent_run_id
    run = client.create_run(
        experiment_id, run_name=name, tags={str(k): str(v) for k, v in all_tags.items()}
    )
    if status == Status.PENDING:
        client.update_run(run.info.run_id, status="SCHEDULED")
    return run.info.run_id, None


def mark(client: MlflowClient, run_id: str, status: Status) -> None:
    """Set a run that is not over to pending or running."""
    client.update_run(run_id, status="SCHEDULED" if status == Status.PENDING else "RUNNING")
    set_tags(client, run_id, {Tag.STATUS: status})


def close_run(
    client: MlflowClient, run_id: str, status: Status, tags: Mapping[str, object] | None = None
) -> None:
    """Write the run's final status (and `tags`, such as its error) and end it in MLflow."""
    set_tags(client, run_id, {Tag.STATUS: status, **(tags or {})})
    ended = {Status.FINISHED: "FINISHED", Status.INTERRUPTED: "KILLED"}.get(status, "FAILED")
    client.set_terminated(run_id, ended)


def run_status(run: Run) -> Status | None:
    """The run's astropt status, None when it has none (or an unknown one)."""
    value = run.data.tags.get(Tag.STATUS)
    return Status(value) if value in Status._value2member_map_ else None


def logged_through(client: MlflowClient, run_id: str) -> dict[str, int]:
    """For each metric of a run, the highest step already logged."""
    keys = client.get_run(run_id).data.metrics
    return {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in keys}


def metric_history(client: MlflowClient, run_id: str, key: str) -> list[MetricPoint]:
    return client.get_metric_history(run_id, key)


@dataclass
class MetricBuffer:
    """Collects metric points and writes them in batches, each (key, step) at most once."""

    client: MlflowClient
    run_id: str
    skip_through: dict[str, int] = field(default_factory=dict)
    _pending: dict[tuple[str, int], MetricPoint] = field(default_factory=dict)

    @property
    def pending(self) -> list[MetricPoint]:
        return list(self._pending.values())

    def add(self, step: int, values: Mapping[str, float]) -> None:
        """Queue points; a (key, step) already logged is dropped, one already queued replaced."""
        now = int(time.time() * 1000)
        self.add_points(MetricPoint(key, float(value), now, step) for key, value in values.items())

    def add_points(self, points: Iterable[MetricPoint]) -> None:
        """Queue points as they were recorded (timestamp included), except those logged."""
        for point in points:
            if point.step > self.skip_through.get(point.key, -1):
                self._pending[(point.key, point.step)] = point

    def flush(self) -> bool:
        """Write what is pending; on failure keep the unwritten points and return False."""
        while self._pending:
            chunk = self.pending[:MAX_BATCH]
            try:
                self.client.log_batch(self.run_id, metrics=chunk)
            except Exception as error:  # unreachable server, timeouts, a locked store
                log.warning("MLflow write failed (%s); %d points kept", error, len(self._pending))
                return False
            for point in chunk:
                del self._pending[(point.key, point.step)]
                held = self.skip_through.get(point.key, -1)
                self.skip_through[point.key] = max(point.step, held)
        return True
