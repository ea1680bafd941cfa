"""Per-cell fixed cost of a sweep vs its training time, from the sweep's own MLflow record.

    python sweeps/run_grid.py && python benchmarks/sweep_overhead.py [--experiment astropt-default]

For every finished run (the cells, and a branching sweep's trunks): wall time of its MLflow run,
the start-up phases the workers measure (`time/worker_start_s`: trial start, worker group and
process group; `time/engine_init_s`: DeepSpeed; `time/first_batch_s`: validation set and first
training batch), and the training time (tokens the run trained itself / steady tokens per
second). Overhead = wall - training. Target: < 10 s per cell.
Results: benchmarks/results/sweep_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from mlflow.tracking import MlflowClient

from astropt.config import default_tracking_uri

RESULTS = Path(__file__).parent / "results" / "sweep_overhead.json"
PHASES = ("time/worker_start_s", "time/engine_init_s", "time/first_batch_s")


def cell_costs(client: MlflowClient, experiment: str) -> list[dict[str, float | str]]:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"no experiment {experiment!r}: run the sweep first")
    query = "tags.`astropt.status` = 'finished'"  # cells and trunks (the parent has no status)
    rows = []
    for run in client.search_runs([found.experiment_id], filter_string=query):
        rates = [m.value for m in client.get_metric_history(run.info.run_id, "tokens_per_s")][1:]
        metrics = run.data.metrics
        wall = (run.info.end_time - run.info.start_time) / 1000
        own_tokens = metrics["final/tokens_seen"] - _start_tokens(run)
        train = own_tokens / statistics.median(rates) if rates else float("nan")
        rows.append({
            "cell": run.data.tags["astropt.cell"], "wall_s": wall, "train_s": train,
            "overhead_s": wall - train, **{p: metrics.get(p, float("nan")) for p in PHASES},
        })  # fmt: skip
    return sorted(rows, key=lambda r: r["cell"])


def _start_tokens(run) -> float:
    """Tokens a branch starts from (its trunk trained them), 0 for other runs."""
    step = int(run.data.tags.get("astropt.branch_step", 0))
    return step * float(run.data.params["global_batch_tokens"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tracking-uri", default=default_tracking_uri())
    parser.add_argument("--experiment", default="astropt-default")
    args = parser.parse_args()
    rows = cell_costs(MlflowClient(args.tracking_uri), args.experiment)
    result = {
        "cells": rows,
        "median_overhead_s": statistics.median(r["overhead_s"] for r in rows),
        "total_wall_s": sum(r["wall_s"] for r in rows),
        "total_train_s": sum(r["train_s"] for r in rows),
        "target_overhead_s": 10.0,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    for row in rows:
        print(f"{row['cell']:32s} wall {row['wall_s']:6.1f} s  train {row['train_s']:6.1f} s  "
              f"overhead {row['overhead_s']:5.1f} s")  # fmt: skip
    print(f"median overhead {result['median_overhead_s']:.1f} s per cell (target < 10 s)")


if __name__ == "__main__":
    main()
