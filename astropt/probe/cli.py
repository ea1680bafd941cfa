"""Command line: python -m astropt.probe (see --help)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

from astropt.probe.data import open_shards
from astropt.probe.embed import ASTROPT_LAYOUT, LAYOUTS, POOLS, EmbedSettings
from astropt.probe.embedding_map import PROJECTIONS
from astropt.probe.errors import ProbeInputError
from astropt.probe.report import ProbeTable, to_csv, to_json, to_markdown, to_text
from astropt.probe.run import ProbeOptions, probe_model, probe_run
from astropt.probe.weights import best_cell, export_run, tracking_client, weights_source
from astropt.record import default_tracking_uri

FORMATS = {"text": to_text, "markdown": to_markdown, "csv": to_csv, "json": to_json}
EPILOG = """examples:
  python -m astropt.probe --experiment astropt-default --targets mag_r,r_eff_pix,sersic_n
  python -m astropt.probe --experiment astropt-default --export runs/model
  python -m astropt.probe --weights runs/model --data DIR/val --out probe/
  python -m astropt.probe --weights astroPT/models/fully_trained/0089M_params --data DIR/val

--experiment takes the experiment's finished cell with the lowest final val loss. --weights
takes a folder (or .safetensors file) as exported, or an upstream astroPT checkpoint (a
*ckpt.pt file, or a folder of them: its last), recognised by its name."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m astropt.probe",
        description="Linear probes of astroPT embeddings on galaxy metadata, against an\n"
        "untrained model and PCA of the pixels, and a map of the embeddings.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = parser.add_argument_group("model (one of)")
    source = model.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-id", metavar="ID", help="an MLflow cell run (its model/ artifacts)")
    source.add_argument("--experiment", metavar="NAME", help="its best finished cell run")
    source.add_argument(
        "--weights", type=Path, metavar="PATH", help="exported weights or an upstream checkpoint"
    )
    model.add_argument("--tracking-uri", metavar="URI", help="default: sqlite:///./runs/mlflow.db")
    model.add_argument(
        "--export", type=Path, metavar="DIR", help="write the run's weights to DIR, no probe"
    )
    model.add_argument(
        "--init-seed", type=int, default=0, help="untrained baseline seed with --weights (0)"
    )
    model.add_argument(
        "--image-layout", choices=LAYOUTS, help="what the weights were trained on (by --weights)"
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
    probe.add_argument("--seed", type=int, default=0, help="CV folds and map seed (0)")
    probe.add_argument("--no-baselines", action="store_true", help="probe the model only")
    output = parser.add_argument_group("output")
    output.add_argument("--map-color", metavar="COL", help="map colour (default: mag_r)")
    output.add_argument(
        "--map-method", choices=PROJECTIONS, default="umap", help="map projection (umap)"
    )
    output.add_argument("--out", type=Path, metavar="DIR", help="write the table and the map")
    output.add_argument("--format", choices=FORMATS, default="text", help="stdout table (text)")
    output.add_argument(
        "--log-to-mlflow", action="store_true", help="log metrics and artifacts to the run"
    )
    return parser


def _options(args: argparse.Namespace, layout: str) -> ProbeOptions:
    """The probe's settings; the image layout is --image-layout's, else the weights' own."""
    return ProbeOptions(
        folds=args.folds,
        embed=EmbedSettings(
            layer=args.layer,
            tokens=args.tokens,
            pool=args.pool,
            device=args.device,
            layout=args.image_layout or layout,
        ),
        mad_cut=args.mad_cut,
        seed=args.seed,
        baselines=not args.no_baselines,
        map_colour=args.map_color,
        map_method=args.map_method,
    )


def _targets(args: argparse.Namespace) -> list[str] | None:
    return [t.strip() for t in args.targets.split(",") if t.strip()] if args.targets else None


def _probe_weights(args: argparse.Namespace) -> ProbeTable:
    if not args.data:
        raise ProbeInputError("--weights needs --data (the shard set to probe)")
    image_size = open_shards(args.data).image_shape[-1]  # an upstream model reads this size
    source = weights_source(args.weights, image_size)
    return probe_model(
        source.model,
        args.data,
        _targets(args),
        args.max_images,
        _options(args, source.layout),
        args.out,
        args.init_seed,
        source=source.description,
    )


def _run(args: argparse.Namespace) -> ProbeTable | None:
    """Probe (or, with --export, write the weights of) the chosen model; the table or None."""
    if args.weights is not None:
        return _probe_weights(args)
    uri = args.tracking_uri or default_tracking_uri()
    run_id = args.run_id or best_cell(tracking_client(uri), args.experiment)
    if args.export is not None:
        folder = export_run(tracking_client(uri), run_id, args.export)
        print(f"run {run_id}: weights written to {folder}/")
        return None
    options = _options(args, ASTROPT_LAYOUT)
    targets = _targets(args)
    log = args.log_to_mlflow
    return probe_run(uri, run_id, args.data, targets, args.max_images, options, args.out, log)


def main(argv: list[str] | None = None) -> int:
    """Probe and print the table; bad input is `error: ...` on stderr and exit code 2."""
    os.environ.setdefault(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name, "false")  # 2 small files
    parser = _parser()
    args = parser.parse_args(argv)
    if args.weights is not None and (args.log_to_mlflow or args.export):
        parser.error("--log-to-mlflow and --export need a run (--run-id or --experiment)")
    try:
        table = _run(args)
    except ProbeInputError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    if table is not None:
        sys.stdout.write(FORMATS[args.format](table))
    return 0
