"""Reading a sweep's cells from MLflow. Every name in the record (tags, params, metrics, roles,
statuses) and the paginated run search come from astropt.record."""

import math

import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from astropt.fit_scaling.envelope import Curve
from astropt.fit_scaling.errors import FitInputError
from astropt.fit_scaling.sources import Exclusion, FitData, MlflowOrigin, cells_frame
from astropt.record import (
    Metric,
    Param,
    Role,
    Status,
    Tag,
    experiment_names,
    find_experiment,
    find_sweep_run,
    make_client,
    search_runs,
    sqlite_path,
    validation_curve,
)

# What every finished cell must have, N, D and the loss, as (kind, name).
REQUIRED = (
    ("param", Param.N_PARAMS),
    ("metric", Metric.FINAL_TOKENS_SEEN),
    ("metric", Metric.FINAL_VAL_LOSS),
)
# Cell-table column <- what a cell may also have recorded (NaN when absent or not a number > 0).
OPTIONAL_PARAMS = {
    "lr": Param.LR,
    "lr_multiplier": Param.LR_MULTIPLIER,
    "unique_tokens": Param.UNIQUE_TOKENS,
}
OPTIONAL_METRICS = {
    "epochs": Metric.FINAL_EPOCHS,
    "C_6nd": Metric.FINAL_COMPUTE_6ND,
    "C_attention": Metric.FINAL_COMPUTE_ATTENTION,
}


def _status_reason(status: str) -> str:
    """Why a cell with this status tag is not used."""
    if not status:
        return f"no {Tag.STATUS} tag"
    if status not in Status._value2member_map_:
        return f"unknown {Tag.STATUS} = {status!r}"
    what = "not finished" if status == Status.RUNNING else status
    return f"{what} ({Tag.STATUS} = {status})"


def _require_store(tracking_uri: str) -> None:
    """Refuse a sqlite URI whose database does not exist (MLflow would silently create it)."""
    db = sqlite_path(tracking_uri)
    if db is not None and not db.is_file():
        raise FitInputError(f"no MLflow database at {db} (tracking URI {tracking_uri})")


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
    experiment_id = find_experiment(client, experiment) if experiment else None
    if experiment_id is None:
        names = ", ".join(repr(name) for name in experiment_names(client)) or "none"
        raise FitInputError(
            f"unknown MLflow experiment {experiment!r} at {tracking_uri}; available: {names}"
        )
    return experiment_id, str(experiment), find_sweep_run(client, experiment_id)


def _positive(text: object) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _measurements(run: Run) -> tuple[float, float, float] | str:
    """(N, D, loss) of a finished cell, or what is wrong with it."""
    values = []
    for kind, name in REQUIRED:
        key = str(name)
        source = run.data.params if kind == "param" else run.data.metrics
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


def _optional(run: Run) -> dict[str, float]:
    """The optional columns of one cell (NaN where not recorded)."""
    found = {c: run.data.params.get(key) for c, key in OPTIONAL_PARAMS.items()}
    found |= {c: run.data.metrics.get(key) for c, key in OPTIONAL_METRICS.items()}
    return {column: _positive(value) or np.nan for column, value in found.items()}


def _curve(client: MlflowClient, run_id: str, cell: str, N: float) -> Curve | None:
    tokens, loss = validation_curve(client, run_id)
    if not tokens:
        return None
    return Curve(cell=cell, N=N, tokens=np.array(tokens), loss=np.array(loss))


def load_mlflow(tracking_uri: str, experiment: str | None, parent_run_id: str | None) -> FitData:
    """The cells of a sweep: the children of ``parent_run_id``, or of the latest sweep run in
    ``experiment`` (all cell runs there if it has no sweep run). Cells not ``finished``, finished
    cells with unusable values, and older finished runs of a cell that was run again are
    excluded with the reason."""
    _require_store(tracking_uri)
    try:
        return _load(make_client(tracking_uri), tracking_uri, experiment, parent_run_id)
    except MlflowException as err:
        first_line = str(err).strip().splitlines()[0]
        raise FitInputError(f"cannot read MLflow at {tracking_uri}: {first_line}") from err


def _load(
    client: MlflowClient, tracking_uri: str, experiment: str | None, parent_run_id: str | None
) -> FitData:
    experiment_id, name, parent = _locate(client, tracking_uri, experiment, parent_run_id)
    runs = search_runs(client, experiment_id, Role.CELL, parent_run_id=parent)
    where = f"MLflow experiment {name!r}" + (f", sweep run {parent}" if parent else "")
    if not runs:
        raise FitInputError(f"{where}: no cell runs (tag {Tag.ROLE} = {Role.CELL})")
    excluded: list[Exclusion] = []
    used: dict[str, tuple[Run, tuple[float, float, float]]] = {}
    for run in runs:  # newest first, so the first finished run of a cell is the one kept
        cell = run.data.tags.get(Tag.CELL, run.info.run_name or run.info.run_id)
        status = run.data.tags.get(Tag.STATUS, "")
        run_id = run.info.run_id
        if status != Status.FINISHED:
            excluded.append(Exclusion(cell, run_id, status, _status_reason(status)))
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
    optional = pd.DataFrame([_optional(used[c][0]) for c in names])
    curves = (_curve(client, used[c][0].info.run_id, c, used[c][1][0]) for c in names)
    return FitData(
        origin=where,
        cells=cells_frame(
            names,
            N,
            D,
            loss,
            run_ids=[used[c][0].info.run_id for c in names],
            optional={column: optional[column].to_numpy() for column in optional},
        ),
        excluded=tuple(excluded),
        curves=tuple(c for c in curves if c is not None),
        mlflow=MlflowOrigin(tracking_uri, experiment_id, name, parent),
    )
