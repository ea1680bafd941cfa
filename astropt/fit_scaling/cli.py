"""Command line: python -m astropt.fit_scaling (see ``--help``)."""

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from astropt.fit_scaling.analysis import METHODS, Analysis, Settings, analyse
from astropt.fit_scaling.compute import KINDS
from astropt.fit_scaling.errors import FitInputError
from astropt.fit_scaling.mlflow_log import log_fit_run
from astropt.fit_scaling.mlflow_source import load_mlflow
from astropt.fit_scaling.parametric import BESIROGLU_GRID, COARSE_GRID
from astropt.fit_scaling.plots import write_plots
from astropt.fit_scaling.repetition import MODES
from astropt.fit_scaling.report import to_dict, to_text
from astropt.fit_scaling.sources import FitData, TableColumns, load_table
from astropt.record import Role, Tag, default_tracking_uri

DEFAULT_EXPERIMENT = "astropt-default"
GRIDS = {"full": BESIROGLU_GRID, "coarse": COARSE_GRID}


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m astropt.fit_scaling",
        description="Fit scaling laws L(N, D) to a sweep's runs (MLflow) or to a table of runs, "
        "with bootstrap uncertainties.",
    )
    source = parser.add_argument_group("input (default: MLflow experiment astropt-default)")
    choice = source.add_mutually_exclusive_group()
    choice.add_argument("--experiment", metavar="NAME", help="MLflow experiment of the sweep")
    choice.add_argument("--parent-run", metavar="ID", help="the sweep's MLflow parent run")
    choice.add_argument("--table", type=Path, metavar="PATH", help="CSV or Parquet, one run a row")
    source.add_argument(
        "--tracking-uri", metavar="URI", help="default: sqlite:///<cwd>/runs/mlflow.db"
    )
    for flag, default, what in (
        ("--n-col", "N", "model size N"),
        ("--d-col", "D", "tokens D"),
        ("--c-col", "C", "compute C, used for D = C / (6 N) when the D column is absent"),
        ("--loss-col", "loss", "final loss"),
        ("--budget-col", "budget", "FLOP budget for the IsoFLOP grouping, if present"),
        ("--lr-col", "lr", "learning rate (or multiplier), if present: a learning-rate axis"),
        ("--epochs-col", "epochs", "epochs over the training set, if present"),
        ("--unique-col", "unique_tokens", "unique tokens of the training set, if present"),
        ("--attention-col", "C_attention", "compute with the attention term, if present"),
    ):
        source.add_argument(
            flag, default=default, metavar="NAME", help=f"table column of {what} ({default})"
        )
    fit = parser.add_argument_group("methods")
    fit.add_argument(
        "--method",
        action="append",
        choices=METHODS,
        help="run only these (repeatable; default: all the data allow)",
    )
    fit.add_argument("--bootstrap", type=_count, default=1000, metavar="N", help="resamples (1000)")
    fit.add_argument("--seed", type=int, default=0, metavar="N", help="bootstrap seed (0)")
    fit.add_argument(
        "--ci", type=_fraction, default=0.95, metavar="LEVEL", help="interval level (0.95)"
    )
    fit.add_argument(
        "--predict-compute",
        type=float,
        action="append",
        metavar="C",
        help="FLOP budget for the optimal allocation (repeatable; default: max C, 10x, 100x)",
    )
    fit.add_argument(
        "--holdout-fraction",
        type=_fraction,
        default=0.2,
        metavar="F",
        help="extrapolation check: share of the highest-compute cells held out (0.2)",
    )
    fit.add_argument(
        "--group-tol",
        type=_fraction,
        default=0.1,
        metavar="TOL",
        help="relative tolerance within which C (IsoFLOP budgets) or D values are equal (0.1)",
    )
    fit.add_argument(
        "--compute",
        choices=KINDS,
        help="compute for the IsoFLOP grouping and the allocation: 6nd = 6 N D, attention = "
        "with the attention term (default: attention where every cell has it, else 6nd)",
    )
    fit.add_argument(
        "--data-constrained",
        choices=MODES,
        default="auto",
        help="replace D by the effective data of Muennighoff et al. 2023 for cells that repeat "
        "their data (auto: when some cell does)",
    )
    fit.add_argument(
        "--init-grid",
        choices=GRIDS,
        default="full",
        help="L-BFGS starts: full = Besiroglu et al. grid (5400), coarse = every other value (243)",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print one JSON document instead")
    output.add_argument("--out", type=Path, metavar="DIR", help="write plots and report files")
    output.add_argument("--no-log", action="store_true", help="do not log the fit to MLflow")
    return parser


def _load(args: argparse.Namespace) -> FitData:
    if args.table is not None:
        columns = TableColumns(
            args.n_col,
            args.d_col,
            args.c_col,
            args.loss_col,
            args.budget_col,
            args.lr_col,
            args.epochs_col,
            args.unique_col,
            args.attention_col,
        )
        return load_table(args.table, columns)
    experiment = None if args.parent_run else (args.experiment or DEFAULT_EXPERIMENT)
    return load_mlflow(args.tracking_uri or default_tracking_uri(), experiment, args.parent_run)


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(
        methods=tuple(args.method) if args.method else METHODS,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        level=args.ci,
        predict_compute=tuple(args.predict_compute or ()),
        holdout_fraction=args.holdout_fraction,
        group_tol=args.group_tol,
        init_grid=GRIDS[args.init_grid],
        compute=args.compute,
        data_constrained=args.data_constrained,
    )


def _write(out_dir: Path, analysis: Analysis, listed: bool) -> tuple[list[Path], dict, str]:
    """The plots, report.json and report.txt in ``out_dir``; returns the files, the document and
    the text, which list the files when ``listed``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [*write_plots(analysis, out_dir), out_dir / "report.json", out_dir / "report.txt"]
    shown = files if listed else []
    document, text = to_dict(analysis, shown), to_text(analysis, shown)
    files[-2].write_text(json.dumps(document, indent=2) + "\n")
    files[-1].write_text(text)
    return files, document, text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fit; bad input gives a one-line message on stderr and exit code 2."""
    args = _parser().parse_args(argv)
    try:
        data = _load(args)
        analysis = analyse(data, _settings(args))
    except FitInputError as err:
        print(f"fit_scaling: error: {err}", file=sys.stderr)
        return 2
    log = data.mlflow is not None and not args.no_log
    with tempfile.TemporaryDirectory() as scratch:
        if args.out is None and not log:
            document, text = to_dict(analysis), to_text(analysis)
        else:
            out = args.out or Path(scratch)
            files, document, text = _write(out, analysis, listed=args.out is not None)
        sys.stdout.write(json.dumps(document, indent=2) + "\n" if args.json else text)
        if log:
            run_id = log_fit_run(analysis, files)
            print(
                f"fit_scaling: logged MLflow run {run_id} ({Tag.ROLE}={Role.FIT})", file=sys.stderr
            )
    return 0
