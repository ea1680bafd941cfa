"""Reading a sweep's cells from MLflow, following docs/CONTRACTS.md ("MLflow record")."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from astropt.fit_scaling.envelope import Curve
from astropt.fit_scaling.errors import FitInputError
from astropt.fit_scaling.sources import Exclusion, FitData, MlflowOrigin, cells_frame

ROLE_TAG, CELL_TAG, STATUS_TAG = "astropt.role", "astropt.cell", "astropt.status"
PARENT_TAG = "mlflow.parentRunId"
N_PARAM, D_METRIC, LOSS_METRIC = "n_params", "final/tokens_seen", "final/val_loss"
VAL_LOSS, TOKENS_SEEN = "val/loss", "tokens_seen"
STATUS_REASONS = {
    "diverged": "diverged (astropt.status = diverged)",
    "failed": "failed (astropt.status = failed)",
    "running": "not finished (astropt.status = running)",
    "": "no astropt.status tag",
}


def default_tracking_uri() -> str:
    """sqlite:///<absolute path of the working directory>/runs/mlflow.db"""
    return f"sqlite:///{Path.cwd().resolve() / 'runs' / 'mlflow.db'}"


def _require_store(tracking_uri: str) -> None:
    """Refuse a sqlite URI whose database does not exist (MLflow would silently create it)."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise FitInputError(f"no MLflow database at {db} (tracking URI {tracking_uri})")


def _search(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    """All active runs matching the filter, newest first, across result pages."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _locate(
    client: MlflowClient, tracking_uri: str, experiment: str | None, parent_run_id: str | None
) -> tuple[str, str, str | None]:
    """(experiment id, experiment name, sweep parent run id or None)."""
    if parent_run_id is not None:
        try:
            parent = client.get_run(parent_run_id)
        except MlflowException as err:
            raise FitInputError(
                f"no MLflow run {parent_run_id!r} at {tracking_uri} (--parent-run)"
            ) from err
        experiment_id = parent.info.experiment_id
        return experiment_id, client.get_experiment(experiment_id).name, parent_run_id
    found = client.get_experiment_by_name(experiment) if experiment else None
    if found is None:
        names = ", ".join(repr(e.name) for e in client.search_experiments()) or "none"
        raise FitInputError(
            f"unknown MLflow experiment {experiment!r} at {tracking_uri}; available: {names}"
        )
    sweeps = _search(client, found.experiment_id, f"tags.`{ROLE_TAG}` = 'sweep'")
    return found.experiment_id, found.name, (sweeps[0].info.run_id if sweeps else None)


def _measurements(run: Run) -> tuple[float, float, float] | str:
    """(N, D, loss) of a finished cell, or what is wrong with it."""
    values = []
    for kind, key, source in (
        ("param", N_PARAM, run.data.params),
        ("metric", D_METRIC, run.data.metrics),
        ("metric", LOSS_METRIC, run.data.metrics),
    ):
        if key not in source:
            return f"finished but has no {kind} {key!r}"
        try:
            value = float(source[key])
        except ValueError:
            return f"{kind} {key!r} = {source[key]!r} is not a number"
        if not (math.isfinite(value) and value > 0):
            return f"{kind} {key!r} = {value!r} is not a finite positive number"
        values.append(value)
    return values[0], values[1], values[2]


def _curve(client: MlflowClient, run_id: str, cell: str, N: float) -> Curve | None:
    """The val/loss history against tokens_seen, joined on the optimizer step."""
    loss = client.get_metric_history(run_id, VAL_LOSS)
    tokens = client.get_metric_history(run_id, TOKENS_SEEN)
    if not loss or not tokens:
        return None
    frame = pd.merge(
        pd.DataFrame({"step": [m.step for m in loss], "loss": [m.value for m in loss]}),
        pd.DataFrame({"step": [m.step for m in tokens], "tokens": [m.value for m in tokens]}),
        on="step",
    ).drop_duplicates("step", keep="last")
    return Curve(
        cell=cell, N=N, tokens=frame["tokens"].to_numpy(float), loss=frame["loss"].to_numpy(float)
    )


def load_mlflow(tracking_uri: str, experiment: str | None, parent_run_id: str | None) -> FitData:
    """The cells of a sweep: the children of ``parent_run_id``, or of the latest sweep run in
    ``experiment`` (all cell runs there if it has no sweep run). Cells not ``finished``, finished
    cells with unusable values, and older finished runs of a cell that was run again are
    excluded with the reason."""
    _require_store(tracking_uri)
    try:
        return _load(MlflowClient(tracking_uri), tracking_uri, experiment, parent_run_id)
    except MlflowException as err:
        first_line = str(err).strip().splitlines()[0]
        raise FitInputError(f"cannot read MLflow at {tracking_uri}: {first_line}") from err


def _load(
    client: MlflowClient, tracking_uri: str, experiment: str | None, parent_run_id: str | None
) -> FitData:
    experiment_id, name, parent = _locate(client, tracking_uri, experiment, parent_run_id)
    query = f"tags.`{ROLE_TAG}` = 'cell'"
    if parent is not None:
        query += f" and tags.`{PARENT_TAG}` = '{parent}'"
    runs = _search(client, experiment_id, query)
    where = f"MLflow experiment {name!r}" + (f", sweep run {parent}" if parent else "")
    if not runs:
        raise FitInputError(f"{where}: no cell runs (tag {ROLE_TAG} = cell)")
    excluded: list[Exclusion] = []
    used: dict[str, tuple[Run, tuple[float, float, float]]] = {}
    for run in runs:  # newest first, so the first finished run of a cell is the one kept
        cell = run.data.tags.get(CELL_TAG, run.info.run_name or run.info.run_id)
        status = run.data.tags.get(STATUS_TAG, "")
        run_id = run.info.run_id
        if status != "finished":
            reason = STATUS_REASONS.get(status, f"unknown {STATUS_TAG} = {status!r}")
            excluded.append(Exclusion(cell, run_id, status, reason))
        elif cell in used:
            newer = used[cell][0].info.run_id
            excluded.append(Exclusion(cell, run_id, status, f"superseded by newer run {newer}"))
        elif isinstance(values := _measurements(run), str):
            excluded.append(Exclusion(cell, run_id, status, values))
        else:
            used[cell] = (run, values)
    if not used:
        statuses = ", ".join(f"{e.cell}: {e.reason}" for e in excluded)
        raise FitInputError(f"{where}: no finished cell runs with usable results ({statuses})")
    names = sorted(used, key=lambda c: (used[c][1][0] * used[c][1][1], used[c][1][0]))  # C, N
    N, D, loss = (np.array([used[c][1][k] for c in names]) for k in range(3))
    curves = (_curve(client, used[c][0].info.run_id, c, used[c][1][0]) for c in names)
    return FitData(
        origin=where,
        cells=cells_frame(names, N, D, loss, run_ids=[used[c][0].info.run_id for c in names]),
        excluded=tuple(excluded),
        curves=tuple(c for c in curves if c is not None),
        mlflow=MlflowOrigin(tracking_uri, experiment_id, name, parent),
    )
