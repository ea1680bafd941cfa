"""`python -m astropt.train`: one astroPT run on one token budget, from the command line.

    python -m astropt.train --preset 1M --tokens 2e6 --workers 2

Without --data it trains on a synthetic galaxy set that it generates under data/ if missing.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from astropt.cluster import connect
from astropt.config import (
    PRESETS,
    DataConfig,
    ModelConfig,
    OptimConfig,
    ResourcesConfig,
    TrackingConfig,
    TrainConfig,
    default_tracking_uri,
)
from astropt.data.check import ShardSetError
from astropt.data.synth import ensure_synthetic_dataset
from astropt.train.plan import PlanError
from astropt.train.run import run_training
from astropt.train.trainer import check_data, require_data_cpus_here


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m astropt.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", choices=list(PRESETS), default="1M")
    p.add_argument("--n-layer", type=int, help="custom size (with --n-head, --n-embd)")
    p.add_argument("--n-head", type=int)
    p.add_argument("--n-embd", type=int)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--patch-size", type=int, default=16)
    p.add_argument("--tokens", type=float, required=True, help="token budget, e.g. 2e6")
    p.add_argument("--global-batch-tokens", type=int, default=960)
    p.add_argument("--micro-batch", type=int, default=32, help="images per worker micro-batch")
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument(
        "--zero-stage",
        default="auto",
        choices=["auto", "0", "1", "2", "3"],
        help="auto: 0 on one worker or below 250M parameters, else 2",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cpus-per-worker", type=float, default=0.5)
    p.add_argument(
        "--threads-per-worker", type=int, help="torch threads (default: CPUs rounded up)"
    )
    p.add_argument("--gpu", action="store_true", help="one GPU per worker, bf16")
    p.add_argument("--data", help="folder with train/ and val/ shard sets (default: synthetic)")
    p.add_argument("--synthetic-images", type=int, default=6000)
    p.add_argument("--tracking-uri", default=None, help="default: sqlite store under ./runs")
    p.add_argument("--experiment", default="astropt-train")
    p.add_argument("--name", help="run name (default: derived from size, tokens and seed)")
    p.add_argument("--storage", default="runs/ray", help="Ray storage path (local or s3://)")
    p.add_argument("--address", help="Ray cluster address (default: running cluster, else local)")
    return p


def _configs(args: argparse.Namespace) -> tuple[TrainConfig, ResourcesConfig, TrackingConfig]:
    shape = {"image_size": args.image_size, "patch_size": args.patch_size}
    if args.n_layer:
        model = ModelConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, **shape)
    else:
        model = ModelConfig.from_preset(args.preset, **shape)
    if args.data:
        train_uri, val_uri = f"{args.data.rstrip('/')}/train", f"{args.data.rstrip('/')}/val"
    else:
        folder = f"data/synthetic-{args.image_size}"
        train_uri, val_uri = ensure_synthetic_dataset(
            folder, args.synthetic_images, args.image_size, 0
        )
    cfg = TrainConfig(
        model=model,
        data=DataConfig(train=str(train_uri), val=str(val_uri)),
        tokens=int(args.tokens),
        global_batch_tokens=args.global_batch_tokens,
        micro_batch_images=args.micro_batch,
        optim=OptimConfig(lr=args.lr),
        zero_stage=args.zero_stage if args.zero_stage == "auto" else int(args.zero_stage),
        seed=args.seed,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
    )
    resources = ResourcesConfig(
        workers=args.workers,
        use_gpu=args.gpu,
        cpus_per_worker=args.cpus_per_worker,
        threads_per_worker=args.threads_per_worker,
    )
    tracking = TrackingConfig(
        uri=args.tracking_uri or default_tracking_uri(), experiment=args.experiment
    )
    return cfg, resources, tracking


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg, resources, tracking = _configs(args)
        name = args.name or f"{cfg.model.name}-D{cfg.tokens:.3g}-s{cfg.seed}"
        check_data(cfg)
        connection = connect(args.address)
        print(connection)
        require_data_cpus_here(connection, resources)
        outcome = run_training(cfg, resources, tracking, name=name, storage_path=args.storage)
    except (ValidationError, ShardSetError, PlanError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    note = " (already done; not re-run)" if outcome.skipped else ""
    print(
        f"run {name}: {outcome.status}{note}, final val loss {outcome.final_val_loss}, "
        f"tokens {outcome.tokens_seen}, MLflow run {outcome.run_id}, {outcome.wall_s:.0f} s"
    )
    return 0 if outcome.status == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
