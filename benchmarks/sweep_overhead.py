"""Fixed cost per run of a sweep vs its training time, from the sweep's own MLflow record.

    python sweeps/run_grid.py && python benchmarks/sweep_overhead.py [--experiment astropt-default]

For every finished run (the cells, and a branching sweep's trunks): when its trial submitted it
(the time its rank 0 logged the start-up phases, less those phases), when the driver closed its
MLflow run, the start-up phases the workers measure (`time/worker_start_s`: from the trial
submitting the run to the training loop's start, which for a worker group includes starting
it; `time/engine_init_s`: DeepSpeed; `time/first_batch_s`: validation set and first training
batch), and the training time (tokens the run trained itself / its steady tokens per second,
the median of its log windows after the first). Overhead = wall - training, reported as a
median separately for runs trained in their trial's process (Ray Train's local mode) and runs
on a worker group. The record does not name the mode; a run counts as trained in its trial's
process when it had one worker and reached its loop within `IN_PROCESS_START_S` of being
submitted, which starting a worker group (new processes that import torch) never does.
When the runs ran one at a time, each run's gap after the previous one's end until its own
submission is reported too (Tune's cost per trial: scheduling, a new trial process where one
could not be reused), and per mode the median of overhead + gap, the whole fixed cost per run.
Target: a median overhead of at most 5 s per run trained in its trial's process.
Results: benchmarks/results/sweep_overhead.json (or `--out`).
"""

from __future__ import annotations

import argparse
import json
import statistics
from itertools import pairwise
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from astropt.record import (
    Metric,
    Param,
    Role,
    Status,
    Tag,
    default_tracking_uri,
    find_experiment,
    make_client,
    run_status,
    search_runs,
)

RESULTS = Path(__file__).parent / "results" / "sweep_overhead.json"
PHASES = (Metric.WORKER_START_S, Metric.ENGINE_INIT_S, Metric.FIRST_BATCH_S)
#: A one-worker run that reached its loop this soon after submission trained in its trial's
#: process: a worker group's new processes take longer than this just to import torch.
IN_PROCESS_START_S = 2.0
MODES = ("in_process", "worker_group")
TARGET_S = {"in_process": 5.0}


def run_costs(client: MlflowClient, experiment: str) -> list[dict[str, float | str]]:
    """Wall time, training time, overhead and start-up phases of every finished run."""
    experiment_id = find_experiment(client, experiment)
    if experiment_id is None:
        raise SystemExit(f"no experiment {experiment!r}: run the sweep first")
    runs = [
        run
        for role in (Role.CELL, Role.TRUNK)
        for run in search_runs(client, experiment_id, role)
        if run_status(run) == Status.FINISHED
    ]
    return sorted((_costs(client, run) for run in runs), key=lambda row: row["submitted"])


def _costs(client: MlflowClient, run: Run) -> dict[str, float | str]:
    run_id, metrics = run.info.run_id, run.data.metrics
    phases = {key: _first(client, run_id, key) for key in PHASES}
    logged = phases[Metric.WORKER_START_S].timestamp / 1000  # the last phase's end
    submitted = logged - sum(point.value for point in phases.values())
    wall = run.info.end_time / 1000 - submitted
    history = sorted(client.get_metric_history(run_id, Metric.TOKENS_PER_S), key=lambda p: p.step)
    windows = [point.value for point in history[1:]]  # the first holds warm-up, first eval
    own_tokens = metrics[Metric.FINAL_TOKENS_SEEN] - _start_tokens(run)
    train = own_tokens / statistics.median(windows) if windows else float("nan")
    start = phases[Metric.WORKER_START_S].value
    one_worker = int(run.data.params[Param.WORLD_SIZE]) == 1
    return {
        "cell": run.data.tags[Tag.CELL],
        "mode": MODES[0] if one_worker and start < IN_PROCESS_START_S else MODES[1],
        "submitted": submitted,
        "ended": run.info.end_time / 1000,
        "wall_s": wall,
        "own_tokens": own_tokens,
        "train_s": train,
        "overhead_s": wall - train,
        **{key: point.value for key, point in phases.items()},
    }


def _first(client: MlflowClient, run_id: str, key: str):
    """The metric's earliest point (a restarted run logs its start-up again)."""
    return min(client.get_metric_history(run_id, key), key=lambda point: point.timestamp)


def _start_tokens(run: Run) -> float:
    """Tokens a branch starts from (its trunk trained them), 0 for other runs."""
    step = int(run.data.tags.get(Tag.BRANCH_STEP, 0))
    return step * float(run.data.params[Param.GLOBAL_BATCH_TOKENS])


def add_gaps(rows: list[dict[str, float | str | None]]) -> None:
    """Each run's `gap_before_s`: seconds from the previous run's end to its submission; None
    for the first run, and for every run when runs overlapped (ran several at a time)."""
    gaps = [None] + [after["submitted"] - before["ended"] for before, after in pairwise(rows)]
    overlapped = any(gap < 0 for gap in gaps[1:])
    for row, gap in zip(rows, gaps, strict=True):
        row["gap_before_s"] = None if overlapped else gap


def by_mode(rows: list[dict[str, float | str | None]]) -> dict[str, dict[str, float | None]]:
    """Per mode: how many runs, the medians of their overhead, start-up phases and gap before
    them, and of overhead + gap."""
    summary = {}
    for mode in MODES:
        chosen = [row for row in rows if row["mode"] == mode]
        if not chosen:
            continue
        keys = ("overhead_s", *PHASES)
        medians = {f"median_{key}": statistics.median(row[key] for row in chosen) for key in keys}
        gapped = [row for row in chosen if row["gap_before_s"] is not None]
        medians["median_gap_before_s"] = _median(row["gap_before_s"] for row in gapped)
        medians["median_fixed_cost_s"] = _median(
            row["overhead_s"] + row["gap_before_s"] for row in gapped
        )
        summary[mode] = {"runs": len(chosen), **medians}
    return summary


def _median(values) -> float | None:
    values = list(values)
    return statistics.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tracking-uri", default=default_tracking_uri())
    parser.add_argument("--experiment", default="astropt-default")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = run_costs(make_client(args.tracking_uri), args.experiment)
    if not rows:
        raise SystemExit(f"no finished runs in experiment {args.experiment!r}")
    add_gaps(rows)
    result = {
        "experiment": args.experiment,
        "runs": rows,
        "by_mode": by_mode(rows),
        "total_wall_s": sum(row["wall_s"] for row in rows),
        "total_train_s": sum(row["train_s"] for row in rows),
        "target_median_overhead_s": TARGET_S,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for row in rows:
        gap = "" if row["gap_before_s"] is None else f"  gap before {row['gap_before_s']:5.1f} s"
        print(
            f"{row['cell']:32s} {row['mode']:12s} wall {row['wall_s']:6.1f} s  "
            f"train {row['train_s']:6.1f} s  overhead {row['overhead_s']:5.1f} s{gap}"
        )
    for mode, stats in result["by_mode"].items():
        target = f" (target <= {TARGET_S[mode]:g} s)" if mode in TARGET_S else ""
        line = f"{mode}: {stats['runs']} runs, median overhead {stats['median_overhead_s']:.1f} s"
        if stats["median_fixed_cost_s"] is not None:
            line += f", with the gap before each run {stats['median_fixed_cost_s']:.1f} s"
        print(line + target)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
