"""Probe performance against model size and validation loss across a sweep's cells.

Reads every cell run's probe metrics (`probe/<target>/<metric>`, logged by `probe_run`), its
N (param `n_params`) and its `final/val_loss`, and measures how each metric ranks with N and
with the loss by Spearman's rho, as in the astroPT paper's downstream figure (Smith et al. 2024,
arXiv:2405.14930, Fig. 4). Writes a per-cell CSV, the correlation table and one PNG, and logs
them (plus `probe_scale/<target>/<metric>/rho_n` and `rho_loss`) to the sweep's parent run.

    python -m astropt.probe.scale --experiment NAME [--parent-run ID] [--tracking-uri URI]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from scipy.stats import ConstantInputWarning, spearmanr

from astropt.probe.errors import ProbeInputError
from astropt.probe.probes import ALL_METRICS
from astropt.probe.weights import tracking_client
from astropt.record import (
    MAX_BATCH,
    Metric,
    MetricPoint,
    Param,
    ProbeName,
    Role,
    Tag,
    default_tracking_uri,
    experiment_names,
    find_experiment,
    search_runs,
)

METRIC_PREFIX = ProbeName.METRIC
AXES = {
    "n": ("N", "model size N (non-embedding parameters)"),
    "loss": ("final_val_loss", "final val loss"),
}
FILES = ("probe_scale_cells.csv", "probe_scale.csv", "probe_scale.md", "probe_vs_scale.png")
MIN_CELLS = 3  # Spearman's rho of fewer points says nothing


def _experiment_id(client: MlflowClient, experiment: str | None, parent_run_id: str | None) -> str:
    if parent_run_id is not None:
        try:
            return client.get_run(parent_run_id).info.experiment_id
        except MlflowException as err:
            raise ProbeInputError(f"no MLflow run {parent_run_id!r} (--parent-run)") from err
    found = find_experiment(client, experiment or "")
    if found is None:
        names = ", ".join(map(repr, experiment_names(client))) or "none"
        raise ProbeInputError(f"unknown MLflow experiment {experiment!r}; available: {names}")
    return found


def _is_probe_metric(key: str) -> bool:
    """`probe/<target>/<metric>` for a metric probe_run logs (not its fold spread)."""
    metric = key.rsplit("/", 1)[-1]
    return key.startswith(f"{METRIC_PREFIX}/") and key.count("/") >= 2 and metric in ALL_METRICS


def load_cells(
    client: MlflowClient, experiment: str | None, parent_run_id: str | None = None
) -> pd.DataFrame:
    """One row per probed cell run: cell, run_id, N, final_val_loss and its probe metrics."""
    experiment_id = _experiment_id(client, experiment, parent_run_id)
    rows = []
    for run in search_runs(client, experiment_id, Role.CELL, parent_run_id=parent_run_id):
        probes = {k: v for k, v in run.data.metrics.items() if _is_probe_metric(k)}
        if probes:
            rows.append(
                {
                    "cell": run.data.tags.get(Tag.CELL, run.info.run_name),
                    "run_id": run.info.run_id,
                    "N": float(run.data.params.get(Param.N_PARAMS, "nan")),
                    "final_val_loss": run.data.metrics.get(Metric.FINAL_VAL_LOSS, math.nan),
                    **probes,
                }
            )
    if not rows:
        raise ProbeInputError(
            f"no cell run in experiment {experiment_id} has probe metrics ({METRIC_PREFIX}/"
            "<target>/<metric>); probe the cells first (python -m astropt.probe --log-to-mlflow)"
        )
    return pd.DataFrame(rows).sort_values(["N", "final_val_loss"], ignore_index=True)


def probe_metrics(cells: pd.DataFrame) -> list[str]:
    """The probe metric columns, grouped by metric (r2, medae, accuracy, auc) then target."""
    keys = [c for c in cells.columns if _is_probe_metric(c)]
    return sorted(keys, key=lambda k: (ALL_METRICS.index(k.rsplit("/", 1)[1]), k))


def _spearman(x: pd.Series, y: pd.Series) -> tuple[int, float, float]:
    """(points, rho, p) over the rows where both are finite; NaNs below MIN_CELLS points."""
    ok = np.isfinite(x.to_numpy(float)) & np.isfinite(y.to_numpy(float))
    if ok.sum() < MIN_CELLS:
        return int(ok.sum()), math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        result = spearmanr(x[ok], y[ok])
    return int(ok.sum()), float(result.statistic), float(result.pvalue)


def correlations(cells: pd.DataFrame) -> pd.DataFrame:
    """Spearman's rho (and p) of every probe metric with N and with the final val loss."""
    rows = []
    for key in probe_metrics(cells):
        target, metric = key.removeprefix(f"{METRIC_PREFIX}/").rsplit("/", 1)
        row: dict[str, object] = {"target": target, "metric": metric}
        for axis, (column, _) in AXES.items():
            n, rho, p = _spearman(cells[column], cells[key])
            row |= {f"n_{axis}": n, f"rho_{axis}": rho, f"p_{axis}": p}
        rows.append(row)
    return pd.DataFrame(rows)


def plot(cells: pd.DataFrame, table: pd.DataFrame, path: Path) -> None:
    """One row of panels per metric: against N (log axis) and against the final val loss."""
    metrics = list(dict.fromkeys(table["metric"]))
    fig, axes = plt.subplots(len(metrics), 2, figsize=(11, 3.6 * len(metrics)), squeeze=False)
    for panels, metric in zip(axes, metrics, strict=True):
        for ax, (axis, (column, label)) in zip(panels, AXES.items(), strict=True):
            for _, row in table[table["metric"] == metric].iterrows():
                points = cells[[column, f"{METRIC_PREFIX}/{row['target']}/{metric}"]].dropna()
                points = points.sort_values(column)
                ax.plot(
                    *points.to_numpy().T,
                    "o-",
                    label=f"{row['target']} (rho={row[f'rho_{axis}']:.2f})",
                )
            ax.set(
                xlabel=label, ylabel=f"probe {metric}", xscale="log" if axis == "n" else "linear"
            )
            ax.legend(fontsize=7)
    fig.suptitle("linear-probe performance vs model size and val loss (Spearman rho)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _log(client: MlflowClient, parent_run_id: str, table: pd.DataFrame, folder: Path) -> None:
    scale = ProbeName.SCALE_METRIC
    metrics = [
        MetricPoint(f"{scale}/{row['target']}/{row['metric']}/rho_{axis}", row[f"rho_{axis}"], 0, 0)
        for _, row in table.iterrows()
        for axis in AXES
        if np.isfinite(row[f"rho_{axis}"])
    ]
    for start in range(0, len(metrics), MAX_BATCH):
        client.log_batch(parent_run_id, metrics=metrics[start : start + MAX_BATCH])
    client.log_artifacts(parent_run_id, str(folder), ProbeName.SCALE_ARTIFACTS)


def probe_scale(
    tracking_uri: str,
    experiment: str | None,
    parent_run_id: str | None = None,
    out_dir: Path | None = None,
) -> pd.DataFrame:
    """The correlation table of a sweep's probed cells; files in `out_dir` (see FILES), all
    logged to the parent run when one is given."""
    client = tracking_client(tracking_uri)
    cells = load_cells(client, experiment, parent_run_id)
    table = correlations(cells)
    with tempfile.TemporaryDirectory() as scratch:
        folder = out_dir or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        cells.to_csv(folder / FILES[0], index=False)
        table.to_csv(folder / FILES[1], index=False)
        (folder / FILES[2]).write_text(table.to_markdown(index=False, floatfmt=".3g") + "\n")
        plot(cells, table, folder / FILES[3])
        if parent_run_id:
            _log(client, parent_run_id, table, folder)
    return table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m astropt.probe.scale",
        description="Spearman rank correlations of each probe metric with model size and with "
        "final val loss across a sweep's probed cells; a table, a CSV per cell and a plot, "
        "logged to the sweep's parent run.",
    )
    parser.add_argument("--tracking-uri", metavar="URI", help="default: sqlite:///./runs/mlflow.db")
    parser.add_argument("--experiment", metavar="NAME", help="the sweep's MLflow experiment")
    parser.add_argument("--parent-run", metavar="ID", help="only its cells; log results to it")
    parser.add_argument("--out", type=Path, metavar="DIR", help="also keep the files here")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print the correlation table; bad input is `error: ...` on stderr and exit code 2."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not (args.experiment or args.parent_run):
        parser.error("give --experiment or --parent-run")
    try:
        uri = args.tracking_uri or default_tracking_uri()
        table = probe_scale(uri, args.experiment, args.parent_run, args.out)
    except ProbeInputError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    sys.stdout.write(table.to_string(index=False, float_format="{:.3g}".format) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
