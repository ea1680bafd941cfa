"""What the fitter works on (FitData), and reading it from a CSV or Parquet table."""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from astropt.fit_scaling.envelope import Curve
from astropt.fit_scaling.errors import FitInputError, require_positive_finite

CELL_COLUMNS = ("cell", "N", "D", "C", "loss", "budget", "run_id")
# What a cell may also carry (NaN where unknown): its learning rate and multiplier (one variant
# of a learning-rate axis), epochs over and unique tokens of its training set, and its compute
# counted as 6 N D and with the attention term.
OPTIONAL_COLUMNS = ("lr", "lr_multiplier", "epochs", "unique_tokens", "C_6nd", "C_attention")


@dataclass(frozen=True)
class Exclusion:
    """A cell left out of the fits, and why."""

    cell: str
    run_id: str | None
    status: str
    reason: str


@dataclass(frozen=True)
class MlflowOrigin:
    """Where MLflow input came from, so that the fit run can be logged next to it."""

    tracking_uri: str
    experiment_id: str
    experiment_name: str
    parent_run_id: str | None


@dataclass(frozen=True)
class FitData:
    """Cells used by the fits (``cells`` has the columns CELL_COLUMNS + OPTIONAL_COLUMNS;
    ``budget`` is NaN when unknown, ``run_id`` None for tables), cells left out, and validation
    curves."""

    origin: str
    cells: pd.DataFrame
    excluded: tuple[Exclusion, ...] = ()
    curves: tuple[Curve, ...] = ()
    mlflow: MlflowOrigin | None = None


@dataclass(frozen=True)
class TableColumns:
    """Column names of a table input; D may instead be derived from C as D = C / (6 N). The
    columns from ``budget`` on are optional."""

    n: str = "N"
    d: str = "D"
    c: str = "C"
    loss: str = "loss"
    budget: str = "budget"
    lr: str = "lr"
    epochs: str = "epochs"
    unique_tokens: str = "unique_tokens"
    c_attention: str = "C_attention"

    def optional(self) -> dict[str, str]:
        """Cell-table column (OPTIONAL_COLUMNS) <- table column, for those a table may give."""
        return {
            "lr": self.lr,
            "epochs": self.epochs,
            "unique_tokens": self.unique_tokens,
            "C_attention": self.c_attention,
        }


def cells_frame(
    names: list[str],
    N: np.ndarray,
    D: np.ndarray,
    loss: np.ndarray,
    budget: np.ndarray | None = None,
    run_ids: list[str] | None = None,
    optional: Mapping[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """The cell table with C = 6 N D; ``optional`` columns (OPTIONAL_COLUMNS) are NaN unless
    given."""
    unknown = np.full(len(names), np.nan)
    given = dict(optional or {})
    return pd.DataFrame(
        {
            "cell": names,
            "N": N,
            "D": D,
            "C": 6.0 * N * D,
            "loss": loss,
            "budget": unknown if budget is None else budget,
            "run_id": [None] * len(names) if run_ids is None else run_ids,
            **{
                name: np.asarray(given.get(name, unknown), dtype=float) for name in OPTIONAL_COLUMNS
            },
        },
        columns=[*CELL_COLUMNS, *OPTIONAL_COLUMNS],
    )


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FitInputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise FitInputError(f"{path}: expected a .csv or .parquet file, got {suffix or 'none'}")
    try:
        return pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except (OSError, ValueError) as err:  # parser and Arrow errors derive from these
        raise FitInputError(f"{path}: cannot read it as {suffix[1:]}: {err}") from err


def _numeric_column(frame: pd.DataFrame, path: Path, name: str) -> np.ndarray:
    """The column as floats, every value checked to be finite and positive."""
    raw = frame[name].to_numpy()
    values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
    require_positive_finite(values, f"{path}: column {name!r}", lambda i: f"data row {i + 1}", raw)
    return values


def load_table(path: Path, columns: TableColumns) -> FitData:
    """Cells from a table with one row per run: N, D (or C), loss and optionally budget."""
    frame = _read(path)
    available = ", ".join(repr(str(c)) for c in frame.columns) or "none"

    def missing(what: str) -> FitInputError:
        return FitInputError(f"{path}: missing column {what}; available columns: {available}")

    for name, flag in ((columns.n, "--n-col"), (columns.loss, "--loss-col")):
        if name not in frame:
            raise missing(f"{name!r} ({flag})")
    N = _numeric_column(frame, path, columns.n)
    if columns.d in frame:
        D = _numeric_column(frame, path, columns.d)
    elif columns.c in frame:
        D = _numeric_column(frame, path, columns.c) / (6.0 * N)
    else:
        raise missing(
            f"{columns.d!r} (--d-col), or {columns.c!r} (--c-col) to derive D = C / (6 N)"
        )
    loss = _numeric_column(frame, path, columns.loss)
    budget = _numeric_column(frame, path, columns.budget) if columns.budget in frame else None
    optional = {
        cell_column: _numeric_column(frame, path, name)
        for cell_column, name in columns.optional().items()
        if name in frame
    }
    names = [f"row {i + 1}" for i in range(len(frame))]
    cells = cells_frame(names, N, D, loss, budget, optional=optional)
    return FitData(origin=str(path), cells=cells)
