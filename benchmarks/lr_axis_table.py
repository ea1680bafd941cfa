"""A sweep's cells with a learning-rate axis run on some of its sizes, as one table to fit.

    python benchmarks/lr_axis_table.py --base URI EXPERIMENT --axis URI EXPERIMENT --out cells.csv
    python -m astropt.fit_scaling --table cells.csv

The axis sweep (e.g. the default grid restricted to one size, with `lr_multipliers: [0.5, 1,
2]`) replaces the base sweep's cells of the sizes it ran; the base's other sizes stay at their
multiplier 1. fit_scaling then keeps the best multiplier per (N, D) and lists which won, as it
does for one sweep with an axis on every size, which would cost the whole grid again per
multiplier.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from astropt.record import (
    Metric,
    Param,
    Role,
    Status,
    Tag,
    find_experiment,
    make_client,
    run_status,
    search_runs,
)


def cells(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """One row per finished cell, in the columns `fit_scaling --table` reads by default."""
    client = make_client(tracking_uri)
    experiment_id = find_experiment(client, experiment)
    if experiment_id is None:
        raise SystemExit(f"no experiment {experiment!r} in {tracking_uri}")
    rows = []
    for run in search_runs(client, experiment_id, Role.CELL):
        if run_status(run) != Status.FINISHED:
            continue
        metrics, params = run.data.metrics, run.data.params
        rows.append({
            "cell": run.data.tags[Tag.CELL],
            "size": run.data.tags[Tag.SIZE],
            "N": int(params[Param.N_PARAMS]),
            "D": metrics[Metric.FINAL_TOKENS_SEEN],
            "loss": metrics[Metric.FINAL_VAL_LOSS],
            "lr": float(params[Param.LR_MULTIPLIER]),
            "epochs": metrics[Metric.FINAL_EPOCHS],
            "unique_tokens": float(params[Param.UNIQUE_TOKENS]),
            "C_attention": metrics[Metric.FINAL_COMPUTE_ATTENTION],
        })  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", nargs=2, metavar=("URI", "EXPERIMENT"), required=True)
    parser.add_argument("--axis", nargs=2, metavar=("URI", "EXPERIMENT"), required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    base, axis = cells(*args.base), cells(*args.axis)
    table = pd.concat([base[~base["size"].isin(set(axis["size"]))], axis], ignore_index=True)
    table.to_csv(args.out, index=False)
    counts = table.groupby("lr").size().to_dict()
    print(f"{len(table)} cells ({counts} by lr multiplier) written to {args.out}")


if __name__ == "__main__":
    main()
