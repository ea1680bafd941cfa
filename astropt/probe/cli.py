"""Command line: python -m astropt.probe (see ``--help``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from astropt.probe.embed import POOLS, EmbedSettings, load_weights
from astropt.probe.embedding_map import PROJECTIONS
from astropt.probe.errors import ProbeInputError
from astropt.probe.report import ProbeTable, to_csv, to_json, to_markdown, to_text
from astropt.probe.run import ProbeOptions, probe_model, probe_run
from astropt.record import default_tracking_uri

FORMATS = {"text": to_text, "markdown": to_markdown, "csv": to_csv, "json": to_json}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m astropt.probe",
        description="Linear probes of astroPT embeddings on galaxy metadata, against an "
        "untrained model and PCA of the pixels.",
    )
    model = parser.add_argument_group("model (one of)")
    source = model.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-id", metavar="ID", help="MLflow cell run (its model/ artifacts)")
    source.add_argument(
        "--weights", type=Path, metavar="PATH", help="folder (or .safetensors file) as exported"
    )
    model.add_argument("--tracking-uri", metavar="URI", help="default: sqlite:///./runs/mlflow.db")
    model.add_argument(
        "--init-seed", type=int, default=0, help="untrained baseline seed with --weights (0)"
    )
    data = parser.add_argument_group("data and targets")
    data.add_argument(
        "--data", metavar="SHARDS", help="shard set or data root with val/ (default: the run's)"
    )
    data.add_argument("--targets", metavar="COLS", help="comma separated (default: all numeric)")
    data.add_argument("--max-images", type=int, metavar="N", help="first N images (default: all)")
    probe = parser.add_argument_group("probe")
    probe.add_argument("--folds", type=int, default=5, help="CV folds (5)")
    probe.add_argument("--layer", type=int, default=-1, help="block whose output is used (-1)")
    probe.add_argument("--tokens", type=int, default=64, help="first spiral tokens pooled (64)")
    probe.add_argument("--pool", choices=POOLS, default="mean", help="token pooling (mean)")
    probe.add_argument("--device", default="cpu", help="torch device for the embeddings (cpu)")
    probe.add_argument("--mad-cut", type=float, default=5.0, help="outlier cut, robust sigmas (5)")
    probe.add_argument("--seed", type=int, default=0, help="CV folds, PCA and t-SNE seed (0)")
    probe.add_argument("--no-baselines", action="store_true", help="probe the model only")
    output = parser.add_argument_group("output")
    output.add_argument("--map-color", metavar="COL", help="map colour (default: mag_r)")
    output.add_argument(
        "--map-method", choices=PROJECTIONS, default="pca", help="map projection (pca)"
    )
    output.add_argument("--out", type=Path, metavar="DIR", help="write the table and the map")
    output.add_argument("--format", choices=FORMATS, default="text", help="stdout table (text)")
    output.add_argument(
        "--log-to-mlflow", action="store_true", help="log metrics and artifacts to --run-id"
    )
    return parser


def _options(args: argparse.Namespace) -> ProbeOptions:
    return ProbeOptions(
        folds=args.folds,
        embed=EmbedSettings(
            layer=args.layer, tokens=args.tokens, pool=args.pool, device=args.device
        ),
        mad_cut=args.mad_cut,
        seed=args.seed,
        baselines=not args.no_baselines,
        map_colour=args.map_color,
        map_method=args.map_method,
    )


def _probe(args: argparse.Namespace) -> ProbeTable:
    targets = [t.strip() for t in args.targets.split(",") if t.strip()] if args.targets else None
    options = _options(args)
    if args.run_id:
        uri = args.tracking_uri or default_tracking_uri()
        return probe_run(
            uri,
            args.run_id,
            args.data,
            targets,
            args.max_images,
            options,
            args.out,
            log=args.log_to_mlflow,
        )
    if not args.data:
        raise ProbeInputError("--weights needs --data (the shard set to probe)")
    model = load_weights(args.weights)
    return probe_model(
        model,
        args.data,
        targets,
        args.max_images,
        options,
        args.out,
        args.init_seed,
        source=str(args.weights),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Probe and print the table; bad input is one line on stderr and exit code 2."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.log_to_mlflow and not args.run_id:
        parser.error("--log-to-mlflow needs --run-id (the run to log to)")
    try:
        table = _probe(args)
    except ProbeInputError as err:
        print(f"probe: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    sys.stdout.write(FORMATS[args.format](table))
    return 0
