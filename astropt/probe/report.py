"""The probe table: one row per (target, feature set), as text, markdown, CSV, JSON and MLflow
metrics."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

import pandas as pd

from astropt.probe.baselines import FEATURE_SETS, TRAINED
from astropt.probe.probes import ALL_METRICS, Score
from astropt.record import ProbeName

UNITS_NOTE = (
    "r2: coefficient of determination; medae: median absolute error in robust-standardised "
    "units (target minus its median, over its IQR or, if that is 0, its std, after a MAD "
    "outlier cut); accuracy and auc "
    "(one-vs-rest macro for more than 2 classes) for classes; +- is the std over CV folds; "
    "n: rows probed (dropped: missing, outliers or classes rarer than the fold count)."
)


@dataclass(frozen=True)
class ProbeRow:
    """Cross-validated scores of one feature set on one target."""

    target: str
    kind: str
    features: str
    n_rows: int
    n_dropped: int
    scores: dict[str, Score]


@dataclass(frozen=True)
class ProbeTable:
    """All probe results of one model, with what produced them in `info`."""

    rows: list[ProbeRow]
    info: dict[str, object] = field(default_factory=dict)

    def score(self, target: str, metric: str, features: str = TRAINED) -> Score:
        for row in self.rows:
            if row.target == target and row.features == features:
                return row.scores[metric]
        raise KeyError(f"no {features} probe of {target!r}")

    def frame(self) -> pd.DataFrame:
        """Long form: one line per (target, feature set, metric)."""
        records = [
            {
                "target": row.target,
                "kind": row.kind,
                "features": row.features,
                "metric": metric,
                "mean": score.mean,
                "std": score.std,
                "n_rows": row.n_rows,
                "n_dropped": row.n_dropped,
            }
            for row in self.rows
            for metric, score in row.scores.items()
        ]
        return pd.DataFrame.from_records(records)

    def mlflow_metrics(self) -> dict[str, float]:
        """`probe/<target>/<metric>` (+ `_std`) for the model, `probe_baseline/<features>/...`
        for the baselines."""
        metrics = {}
        for row in self.rows:
            prefix = (
                ProbeName.METRIC
                if row.features == TRAINED
                else f"{ProbeName.BASELINE_METRIC}/{row.features}"
            )
            for metric, score in row.scores.items():
                key = f"{prefix}/{metric_safe(row.target)}/{metric}"
                metrics[key] = score.mean
                metrics[key + ProbeName.STD_SUFFIX] = score.std
        return metrics


def metric_safe(name: str) -> str:
    """A column name as MLflow accepts it inside a metric key."""
    return re.sub(r"[^\w\-. :]", "_", name)


def wide_frame(table: ProbeTable) -> pd.DataFrame:
    """One line per (target, metric), one column per feature set, cells "mean +- std"."""
    long = table.frame()
    long["cell"] = [f"{m:.3f} +- {s:.3f}" for m, s in zip(long["mean"], long["std"], strict=True)]
    long["n"] = [
        f"{n} ({d} dropped)" for n, d in zip(long["n_rows"], long["n_dropped"], strict=True)
    ]
    wide = long.pivot_table(
        index=["target", "kind", "n", "metric"], columns="features", values="cell", aggfunc="first"
    )
    order = [f for f in FEATURE_SETS if f in wide.columns]
    targets = list(dict.fromkeys(long["target"]))
    wide = wide[order].reset_index()
    wide["target"] = pd.Categorical(wide["target"], categories=targets, ordered=True)
    wide["metric"] = pd.Categorical(wide["metric"], categories=ALL_METRICS, ordered=True)
    return wide.sort_values(["target", "metric"]).reset_index(drop=True).rename_axis(columns=None)


def _header(table: ProbeTable) -> str:
    return ", ".join(f"{k}={v}" for k, v in table.info.items())


def to_text(table: ProbeTable) -> str:
    return f"{_header(table)}\n{wide_frame(table).to_string(index=False)}\n{UNITS_NOTE}\n"


def to_markdown(table: ProbeTable) -> str:
    body = wide_frame(table).to_markdown(index=False)
    return f"Probe: {_header(table)}\n\n{body}\n\n{UNITS_NOTE}\n"


def to_csv(table: ProbeTable) -> str:
    return table.frame().to_csv(index=False)


def to_json(table: ProbeTable) -> str:
    rows = [asdict(row) for row in table.rows]
    return json.dumps({"info": table.info, "units": UNITS_NOTE, "rows": rows}, indent=2) + "\n"
