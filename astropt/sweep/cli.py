"""`python sweeps/run_grid.py [GRID.yaml]`: run a model-size x token-budget grid of astroPT
trainings with Ray Tune, recorded in MLflow.

    python sweeps/run_grid.py                          # the default grid: CPU, synthetic galaxies
    python sweeps/run_grid.py sweeps/grids/paper.yaml --dry-run [--json]
    python sweeps/run_grid.py GRID.yaml --address ray://head:10001

Re-running a grid (with or without --resume) skips runs already finished in MLflow and
continues unfinished ones from their last checkpoint; new sizes or budgets run as new cells.
Ctrl-C stops the sweep, recording its running cells as interrupted; run the command again to
continue them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from astropt.data.check import ShardSetError
from astropt.data.synthetic_sets import DataSetConflict
from astropt.hparams import RuleError
from astropt.record import TrackingUnreachable
from astropt.sweep.cells import expand
from astropt.sweep.estimate import dry_run
from astropt.sweep.grid import GridError, load_grid
from astropt.sweep.run import grid_facts, run_sweep
from astropt.train.plan import PlanError

DEFAULT_GRID = Path(__file__).resolve().parents[2] / "sweeps" / "grids" / "default.yaml"
USER_ERRORS = (GridError, ShardSetError, PlanError, RuleError, TrackingUnreachable, DataSetConflict)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python sweeps/run_grid.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("grid", nargs="?", type=Path, default=DEFAULT_GRID, help="grid YAML file")
    p.add_argument("--dry-run", action="store_true", help="print every run's plan and exit")
    p.add_argument("--json", action="store_true", help="with --dry-run: one JSON document")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted sweep (what a re-run does anyway; kept explicit)",
    )
    p.add_argument(
        "--address",
        help="join the Ray cluster at this address ('local': start a fresh local one); default: "
        "RAY_ADDRESS, or a cluster started with `ray start`/`ray up`, else a new local one",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.dry_run:
            grid = load_grid(args.grid)
            print(dry_run(expand(grid, grid_facts(grid)), grid.resources, as_json=args.json))
            return 0
        return run_sweep(args.grid, address=args.address)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
