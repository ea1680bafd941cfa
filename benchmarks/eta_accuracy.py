"""How far the sweep's ETA is from the time a sweep really took, replayed from its MLflow record.

    python sweeps/run_grid.py && python benchmarks/eta_accuracy.py [--experiment astropt-default]

The ETA (astropt/sweep/progress.py) starts from a prior, a calibration of the grid's smallest and
largest models on this machine, and refits its per-token costs on the runs done. This replays
that: after each run, in the order the sweep ran them, it estimates the time left from the
prior and the runs so far, and compares it with the time the sweep actually took from that run's
end to its last run's end. Run it on the machine the sweep ran on, idle (the calibration is
measured now). Target: within 30% from the first run's end on.

It writes the replay to benchmarks/results/eta_accuracy.json and, with --record, the runs and
the prior to tests/data/default_sweep_history.json, which tests/unit/sweep/test_eta.py replays.
"""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import asdict
from datetime import date
from pathlib import Path

from sweep_overhead import run_costs

from astropt.record import (
    Metric,
    Role,
    Tag,
    default_tracking_uri,
    find_experiment,
    make_client,
    search_runs,
)
from astropt.sweep.cells import expand
from astropt.sweep.estimate import sweep_costs
from astropt.sweep.grid import load_grid
from astropt.sweep.progress import Costs, Done, Estimator
from astropt.sweep.run import grid_facts

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "eta_accuracy.json"
HISTORY = REPO / "tests" / "data" / "default_sweep_history.json"
TARGET = 0.30


def history(tracking_uri: str, experiment: str) -> list[dict[str, float | str]]:
    """Every finished run in the order it ran: its own tokens, FLOPs per token, wall time, end."""
    client = make_client(tracking_uri)
    experiment_id = find_experiment(client, experiment)
    metrics_of = {
        run.data.tags[Tag.CELL]: run.data.metrics
        for role in (Role.CELL, Role.TRUNK)
        for run in search_runs(client, experiment_id, role)
    }
    out = []
    for row in run_costs(client, experiment):
        metrics = metrics_of[row["cell"]]
        flops = metrics[Metric.FINAL_COMPUTE_ATTENTION] / metrics[Metric.FINAL_TOKENS_SEEN]
        out.append({"name": row["cell"], "end": row["ended"], "wall_s": row["wall_s"],
                    "tokens": row["own_tokens"], "flops_per_token": flops})  # fmt: skip
    return out


def replay(prior: Costs, runs: list[dict]) -> list[dict[str, float]]:
    """After each run but the last: the ETA's estimate of the time left and the actual time."""
    estimator = Estimator(prior)
    out = []
    for k, run in enumerate(runs[:-1]):
        estimator.done.append(Done(run["tokens"], run["flops_per_token"], run["wall_s"]))
        pending = {r["name"]: (r["tokens"], r["flops_per_token"]) for r in runs[k + 1 :]}
        estimate = estimator.seconds_left(pending, {}, {})
        actual = runs[-1]["end"] - run["end"]
        out.append({"after_runs": k + 1, "estimate_s": estimate, "actual_s": actual,
                    "ratio": estimate / actual})  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("grid", nargs="?", default=str(REPO / "sweeps" / "grids" / "default.yaml"))
    parser.add_argument("--tracking-uri", default=default_tracking_uri())
    parser.add_argument("--experiment", default="astropt-default")
    parser.add_argument("--record", action="store_true", help=f"also write {HISTORY}")
    args = parser.parse_args()
    grid = load_grid(args.grid)
    prior = sweep_costs(expand(grid, grid_facts(grid)), grid.resources)
    runs = history(args.tracking_uri, args.experiment)
    points = replay(prior, runs)
    for p in points:
        print(f"after {p['after_runs']:2d} runs: ETA {p['estimate_s']:6.0f} s, "
              f"actual {p['actual_s']:6.0f} s, ratio {p['ratio']:.2f}")  # fmt: skip
    worst = max(abs(p["ratio"] - 1) for p in points)
    print(f"largest error {worst:.0%} (target: within {TARGET:.0%} from the first run's end on)")
    result = {"grid": args.grid, "experiment": args.experiment, "prior": asdict(prior),
              "machine": platform.processor() or platform.machine(), "points": points,
              "runs": runs}  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    if args.record:
        source = (
            f"{args.experiment} ({Path(args.grid).name}), recorded {date.today()} by "
            "benchmarks/eta_accuracy.py --record on the machine that ran it, idle"
        )
        HISTORY.write_text(
            json.dumps({"source": source, "prior": asdict(prior), "runs": runs}, indent=1)
        )
        print(f"written to {HISTORY}")


if __name__ == "__main__":
    main()
