"""MLflow: experiments and runs made in the driver, metrics buffered and flushed by rank 0.

Metrics are buffered and written in batches when a checkpoint is reported (and at the end), so a
run restarted from a checkpoint re-logs only steps that MLflow does not hold yet: the history of
every metric has each step once. A write that fails (the server is away) keeps the points and
retries at the next flush; what still cannot be written when the run ends is spooled to a file
that `python -m astropt.spool upload` sends later.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

MAX_BATCH = 1000  # MLflow's limit on entities per log_batch call
log = logging.getLogger(__name__)

_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def scrub_uri(uri: str) -> str:
    """A URI with any user:password@ part removed, safe to log or print."""
    return _CREDENTIALS.sub(r"\g<scheme>", uri)


def default_artifact_location(tracking_uri: str) -> str | None:
    """Beside a local SQLite store, `mlartifacts/`; elsewhere the server decides."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """Id of the experiment `name`, created (in the driver, never a worker) if missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    location = artifact_location or default_artifact_location(client.tracking_uri)
    return client.create_experiment(name, artifact_location=location)


def make_client(tracking_uri: str) -> MlflowClient:
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri)


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, object]) -> None:
    """Log params that the run does not hold yet (MLflow refuses to change a logged param)."""
    held = client.get_run(run_id).data.params
    fresh = [Param(k, str(v)) for k, v in params.items() if k not in held]
    for start in range(0, len(fresh), 100):
        client.log_batch(run_id, params=fresh[start : start + 100])


def set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, object]) -> None:
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def logged_through(client: MlflowClient, run_id: str) -> dict[str, int]:
    """For each metric of a run, the highest step already logged."""
    keys = client.get_run(run_id).data.metrics
    return {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in keys}


@dataclass
class MetricBuffer:
    """Collects metric points and writes them in batches, each (key, step) at most once."""

    client: MlflowClient
    run_id: str
    skip_through: dict[str, int] = field(default_factory=dict)
    _pending: dict[tuple[str, int], Metric] = field(default_factory=dict)

    @property
    def pending(self) -> list[Metric]:
        return list(self._pending.values())

    def add(self, step: int, values: Mapping[str, float]) -> None:
        """Queue points; a (key, step) already logged is dropped, one already queued replaced."""
        now = int(time.time() * 1000)
        self.add_points(Metric(key, float(value), now, step) for key, value in values.items())

    def add_points(self, points: Iterable[Metric]) -> None:
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
            for metric in chunk:
                del self._pending[(metric.key, metric.step)]
                held = self.skip_through.get(metric.key, -1)
                self.skip_through[metric.key] = max(metric.step, held)
        return True


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


class TrackingUnreachable(ConnectionError):
    """The MLflow tracking server does not answer."""


def open_run(
    client: MlflowClient,
    experiment_id: str,
    name: str,
    *,
    parent_run_id: str | None = None,
    tags: Mapping[str, object] | None = None,
) -> tuple[str, str | None]:
    """The run named `name` in the experiment (under `parent_run_id` when given), created if
    missing. Returns (run_id, its astropt.status tag or None): a re-run reuses, never duplicates.
    """
    query = f"tags.`astropt.cell` = '{name}'"
    if parent_run_id:
        query += f" and tags.`mlflow.parentRunId` = '{parent_run_id}'"
    found = client.search_runs([experiment_id], filter_string=query, max_results=1)
    if found:
        run = found[0]
        return run.info.run_id, run.data.tags.get("astropt.status")
    all_tags = {"astropt.cell": name, "astropt.status": "running", **(tags or {})}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(
        experiment_id, run_name=name, tags={k: str(v) for k, v in all_tags.items()}
    )
    return run.info.run_id, None
