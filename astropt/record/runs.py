"""MLflow stores, experiments and runs: opening, closing, searching, reading statuses."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import quote, urlencode

import requests
from mlflow.entities import Param as ParamEntry
from mlflow.entities import Run, RunTag, ViewType
from mlflow.tracking import MlflowClient

from astropt.record.names import MODEL_TRAINING_VIEW, Role, Status, Tag

PAGE = 1000


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
    tagged as a model-training experiment (MLflow 3.17's UI still opens a new browser in its
    GenAI mode: `ui_link` is the address that opens the model-training view)."""
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


#: The cells of a sweep (trunks included) in MLflow's search syntax: every run with a size tag.
CELLS_FILTER = f"tags.{Tag.SIZE} LIKE '%'"


def ui_link(tracking_uri: str, experiment_id: str) -> str:
    """Where the MLflow UI shows an experiment's cells as curves, in its model-training view
    (a local store: the address `mlflow ui` serves by default)."""
    served = tracking_uri.startswith(("http://", "https://"))
    base = tracking_uri if served else "http://127.0.0.1:5000"
    view = {"workflowType": "machine_learning", "compareRunsMode": "CHART"}
    query = urlencode(view | {"searchFilter": CELLS_FILTER}, quote_via=quote)
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"
