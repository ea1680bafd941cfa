"""Run a model-size x token-budget grid of astroPT trainings with Ray Tune, recorded in MLflow.

    python sweeps/run_grid.py                       # the default grid: CPU, synthetic galaxies
    python sweeps/run_grid.py sweeps/grids/paper.yaml --dry-run
    python sweeps/run_grid.py GRID.yaml --resume --address ray://head:10001

Re-running a grid (with or without --resume) skips cells already finished in MLflow and
continues unfinished ones from their last checkpoint; new sizes or budgets run as new cells.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from astropt.data.check import ShardSetError
from astropt.sweep.grid import GridError, load_grid
from astropt.sweep.run import dry_run, run_sweep
from astropt.tracking import TrackingUnreachable
from astropt.train.plan import PlanError

DEFAULT_GRID = Path(__file__).parent / "grids" / "default.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="run_grid.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("grid", nargs="?", type=Path, default=DEFAULT_GRID, help="grid YAML file")
    parser.add_argument("--dry-run", action="store_true", help="print the cells and exit")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted sweep (the default behaviour of a re-run; kept explicit)",
    )
    parser.add_argument(
        "--address",
        help="Ray cluster address; 'local' starts a new local cluster "
        "(default: a running cluster, else a local one)",
    )
    args = parser.parse_args(argv)
    try:
        if args.dry_run:
            print(dry_run(load_grid(args.grid)))
            return 0
        return run_sweep(args.grid, address=args.address)
    except (GridError, ShardSetError, PlanError, TrackingUnreachable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
