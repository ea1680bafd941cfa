"""Training throughput: a plain PyTorch loop vs this project's runs, in the process and on Ray.

    python benchmarks/train_throughput.py [--preset 1M] [--steps 300] [--repeats 4] [--stream]
    python benchmarks/train_throughput.py --quick    # 30 steps, 1 round: checks the script

The same model, data and global batch are trained five ways, alternating, `--repeats` times:
(a) one process, a plain loop over in-memory uint8 tensors (patchified and standardised each
step, as the workers do), torch AdamW, all cores; (a2) the same loop stepping the project's
DeepSpeed engine with the workers' loss (`fp32_loss`), in the same process (DeepSpeed's own
cost, without Ray); then the project's run (`run_training`) with (b) one worker trained in this
process (Ray Train's local mode: what a laptop sweep's one-worker cell does in its trial's
process), (b2) one worker on a Ray Train worker group (`resources.in_process` False), (c) two
workers. The tokens/s of (b), (b2) and (c) are the runs' own: tokens trained between their first
and last log points over the time between them (from their MLflow history), so start-up is left
out and everything after it (evaluations, checkpoints, epoch boundaries) is in; the median of
the per-window `tokens_per_s` is reported beside it, and the run's fixed cost (its wall time
less its tokens at that rate). Each worker holds its share of the data in memory, read from
Parquet once, as in a laptop sweep; `--stream` makes the runs stream it through Ray Data instead
(`data.memory_mb` 0), the path of data sets too large for memory.
Results: benchmarks/results/train_throughput.json (`--quick`: the temp folder; or `--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from astropt.cluster import connect
from astropt.config import (
    DataConfig,
    ImageConfig,
    ModelConfig,
    ResourcesConfig,
    TrackingConfig,
    TrainConfig,
    TrainingConfig,
)
from astropt.data.pipeline import validation_batches
from astropt.data.synthetic_sets import ensure_synthetic_dataset
from astropt.model import AstroPT
from astropt.patches import images_to_tokens
from astropt.record import Metric
from astropt.train.engine import build_engine, init_world_of_one, release_world_of_one
from astropt.train.loop import fp32_loss
from astropt.train.plan import make_plan
from astropt.train.run import run_training
from astropt.train.trainer import DATA_CPUS, RunData, check_data

RESULTS = Path(__file__).parent / "results" / "train_throughput.json"
IMAGE = ImageConfig(image_size=64, patch_size=16)
#: The project's runs: (workers, trained in this process).
RUNS = {
    "b_1_worker_in_process": (1, True),
    "b2_1_worker_group": (1, False),
    "c_2_workers": (2, False),
}
WARMUP_STEPS = 5  # of the in-process loops, left out of their rate


def in_process(cfg: TrainConfig, steps: int, through_engine: bool) -> dict[str, float]:
    """(a) the loop a user would write, on the same images, batch and optimizer; (a2) the same
    loop stepping the project's DeepSpeed engine (`build_engine`) with the workers' loss
    instead, still in this process: what DeepSpeed alone costs, without Ray."""
    torch.set_num_threads(os.cpu_count() or 1)
    plan = make_plan(cfg, 1, RunData.read_facts(cfg.train_uri, cfg.val_uri))
    images = torch.cat(validation_batches(cfg.train_uri, plan.global_batch_images, 8))
    batches = images.split(plan.micro_batch_images)
    torch.manual_seed(cfg.seed)
    model = AstroPT(cfg.model)
    optim = cfg.training.optim
    if through_engine:
        init_world_of_one("gloo")
        engine = build_engine(model, cfg, plan, bf16=False)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=plan.lr, betas=(0.9, 0.95))
    for step in range(steps):
        if step == WARMUP_STEPS:
            started = time.perf_counter()
        for micro in range(plan.grad_accum):
            batch = batches[(step * plan.grad_accum + micro) % len(batches)]
            tokens = images_to_tokens(batch, cfg.model.image.patch_size)
            if through_engine:
                loss = fp32_loss(engine, tokens)
                engine.backward(loss)
                engine.step()
            else:
                AstroPT.loss(model(tokens), tokens[:, 1:]).backward()
        if not through_engine:
            torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    rate = (steps - WARMUP_STEPS) * plan.global_batch_tokens / (time.perf_counter() - started)
    if through_engine:
        engine.destroy()
        release_world_of_one()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"tokens_per_s": rate, "peak_rss_mb": peak_mb}


def project_run(
    cfg: TrainConfig, workers: int, here: bool, tracking: TrackingConfig, name: str, storage: str
) -> dict[str, float]:
    """(b)/(b2)/(c): the project's run; its rate after start-up, from its MLflow history."""
    cores = os.cpu_count() or 2
    resources = ResourcesConfig(  # reserve what require_data_cpus allows, use every core
        workers=workers,
        cpus_per_worker=(cores - DATA_CPUS) / workers,
        threads_per_worker=max(1, cores // workers),
        in_process=here,
    )
    outcome = run_training(cfg, resources, tracking, name=name, storage_path=storage)
    client = MlflowClient(tracking.uri)
    windows = _history(client, outcome.run_id, Metric.TOKENS_PER_S)[1:]  # [0]: the first eval
    seen = _history(client, outcome.run_id, Metric.TOKENS_SEEN)
    first, last = seen[1], seen[-1]  # from the first log point on: start-up excluded
    rate = (last.value - first.value) / ((last.timestamp - first.timestamp) / 1e3)
    metrics = client.get_run(outcome.run_id).data.metrics
    phases = (Metric.WORKER_START_S, Metric.ENGINE_INIT_S, Metric.FIRST_BATCH_S)
    return {
        "tokens_per_s": rate,
        "median_window_tokens_per_s": statistics.median(m.value for m in windows),
        "peak_rss_mb": metrics.get(Metric.PEAK_RSS_MB, float("nan")),
        "startup_s": sum(metrics.get(key, 0.0) for key in phases),
        "wall_s": outcome.wall_s,
        "fixed_cost_s": outcome.wall_s - last.value / rate,
    }


def _history(client: MlflowClient, run_id: str, key: str) -> list:
    return sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="1M")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--images", type=int, default=4000, help="synthetic galaxies to make")
    parser.add_argument("--stream", action="store_true", help="runs stream through Ray Data")
    parser.add_argument("--quick", action="store_true", help="30 steps, 1 round, 1,200 images")
    parser.add_argument("--out", type=Path, help="default: results/, or with --quick the temp dir")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats, args.images = 30, 1, 1200
    out = args.out or (
        Path(tempfile.gettempdir()) / "train_throughput-quick.json" if args.quick else RESULTS
    )
    work = Path(tempfile.mkdtemp(prefix="astropt-bench-"))
    train, val = ensure_synthetic_dataset(str(work / "data"), args.images, IMAGE.image_size, 0)
    cfg = TrainConfig(
        model=ModelConfig.from_preset(args.preset, image=IMAGE),
        data=DataConfig(train=train, val=val, memory_mb=0 if args.stream else 2048),
        tokens=args.steps * 960,
        training=TrainingConfig(
            global_batch_tokens=960, micro_batch_images=64, lr=1e-3, eval_every=10**6,
            checkpoint_every=10**6, log_every=10, eval_batches=1,
        ),
    )  # fmt: skip
    check_data(cfg.data, cfg.model.image)
    connection = connect(num_cpus=os.cpu_count())
    tracking = TrackingConfig(uri=f"sqlite:///{work / 'mlflow.db'}", experiment="bench")
    runs: dict[str, list[dict[str, float]]] = {"a_plain": [], "a2_deepspeed_in_process": []}
    runs |= {key: [] for key in RUNS}
    try:
        for repeat in range(args.repeats):
            runs["a_plain"].append(in_process(cfg, args.steps, through_engine=False))
            runs["a2_deepspeed_in_process"].append(in_process(cfg, args.steps, True))
            for key, (workers, here) in RUNS.items():
                name, storage = f"{key}-{repeat}", str(work / "ray")
                runs[key].append(project_run(cfg, workers, here, tracking, name, storage))
            print(json.dumps({k: v[-1] for k, v in runs.items()}), flush=True)
    finally:
        connection.shutdown()
    plain = [r["tokens_per_s"] for r in runs["a_plain"]]
    ratios = {f"ratio_{key}_over_a": _ratio(runs[key], plain) for key in list(runs)[1:]}
    summary = {
        "preset": args.preset, "image_size": IMAGE.image_size, "global_batch_tokens": 960,
        "steps": args.steps, "repeats": args.repeats, "images": args.images,
        "data": "streamed" if args.stream else "in memory", "cpus": os.cpu_count(),
        "runs": runs, **ratios, "target_b_over_a": 0.95, "load_average": os.getloadavg(),
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(ratios, indent=2))
    print(f"written to {out}")


def _ratio(runs: list[dict[str, float]], plain: list[float]) -> dict[str, float]:
    """Per-repeat ratios (each against the plain run of the same round), median and spread."""
    ratios = [r["tokens_per_s"] / p for r, p in zip(runs, plain, strict=True)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


if __name__ == "__main__":
    main()
