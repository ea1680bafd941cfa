"""Training throughput: a plain PyTorch loop vs this project's Ray Train + DeepSpeed cell.

    python benchmarks/train_throughput.py [--preset 1M] [--steps 300] [--repeats 4]

The same model, data and global batch are trained four ways, alternating, `--repeats` times:
(a) one process, a plain loop over in-memory uint8 tensors (patchified and standardised each
step, as the workers do), torch AdamW, all cores; (a2) the same loop stepping the project's
DeepSpeed engine, in the same process (DeepSpeed's own cost, without Ray); (b) the project's
cell with 1 Ray Train worker; (c) with 2 workers. The tokens/s of (b) and (c) are the cells'
own: tokens trained between their first and last log points over the time between them (from
their MLflow history), so start-up is left out and everything after it (epoch boundaries,
evaluations, checkpoints) is in; the median of the per-window `tokens_per_s` is reported beside
it, over all windows and separately for the first epoch (streamed through Ray Data) and the
later ones (from the worker's memory).
Results: benchmarks/results/train_throughput.json.
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
    ModelConfig,
    OptimConfig,
    ResourcesConfig,
    TrackingConfig,
    TrainConfig,
)
from astropt.data.pipeline import FETCH_IMAGES, validation_batches
from astropt.data.schema import ShardSet
from astropt.data.synthetic_sets import ensure_synthetic_dataset
from astropt.model import AstroPT
from astropt.patches import images_to_tokens
from astropt.train.engine import build_engine, init_world_of_one
from astropt.train.plan import make_plan
from astropt.train.run import run_training
from astropt.train.trainer import DATA_CPUS, check_data

RESULTS = Path(__file__).parent / "results" / "train_throughput.json"


def in_process(cfg: TrainConfig, steps: int, through_engine: bool) -> dict[str, float]:
    """(a) the loop a user would write, on the same images, batch and optimizer; (a2) the same
    loop stepping the project's DeepSpeed engine (`build_engine`) instead, still in this
    process: what DeepSpeed alone costs, without Ray."""
    torch.set_num_threads(os.cpu_count() or 1)
    plan = make_plan(cfg, world_size=1)
    images = torch.cat(validation_batches(cfg.data.train, plan.global_batch_images, 8))
    batches = images.split(plan.micro_batch_images)
    torch.manual_seed(cfg.seed)
    model = AstroPT(cfg.model)
    if through_engine:
        engine = build_engine(model, cfg, plan, bf16=False)
        optimizer = None
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=(0.9, 0.95))
    warmup = 5
    for step in range(steps):
        if step == warmup:
            started = time.perf_counter()
        for micro in range(plan.grad_accum):
            tokens = images_to_tokens(batches[(step * plan.grad_accum + micro) % len(batches)],
                                      cfg.model.patch_size)  # fmt: skip
            if optimizer is None:
                _, loss = engine(tokens)
                engine.backward(loss)
                engine.step()
            else:
                _, loss = model(tokens)
                loss.backward()
        if optimizer is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    rate = (steps - warmup) * plan.global_batch_tokens / (time.perf_counter() - started)
    if optimizer is None:
        engine.destroy()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"tokens_per_s": rate, "peak_rss_mb": peak_mb}


def ray_cell(cfg: TrainConfig, workers: int, tracking: TrackingConfig, name: str,
             storage: str) -> dict[str, float]:  # fmt: skip
    """(b)/(c): the project's cell; its rate after start-up, from its MLflow history."""
    cores = os.cpu_count() or 2
    resources = ResourcesConfig(  # reserve what require_data_cpus allows, use every core
        workers=workers,
        cpus_per_worker=(cores - DATA_CPUS) / workers,
        threads_per_worker=max(1, cores // workers),
    )
    outcome = run_training(cfg, resources, tracking, name=name, storage_path=storage)
    client = MlflowClient(tracking.uri)
    points = sorted(client.get_metric_history(outcome.run_id, "tokens_per_s"), key=lambda m: m.step)
    seen = sorted(client.get_metric_history(outcome.run_id, "tokens_seen"), key=lambda m: m.step)
    first, last = seen[1], seen[-1]  # from the first log point on: start-up excluded
    metrics = client.get_run(outcome.run_id).data.metrics
    streamed = _first_epoch_steps(cfg, workers)
    windows = points[1:]
    return {
        "tokens_per_s": (last.value - first.value) / ((last.timestamp - first.timestamp) / 1e3),
        "median_window_tokens_per_s": statistics.median(m.value for m in windows),
        "first_epoch_steps": streamed,
        "streamed_epoch_median_tokens_per_s": _median(m.value for m in windows
                                                      if m.step <= streamed),
        "in_memory_epochs_median_tokens_per_s": _median(m.value for m in windows
                                                        if m.step - cfg.log_every >= streamed),
        "peak_rss_mb": metrics.get("peak_rss_mb", float("nan")),
        "startup_s": sum(metrics.get(k, 0.0) for k in
                         ("time/worker_start_s", "time/engine_init_s", "time/first_batch_s")),
    }  # fmt: skip


def _first_epoch_steps(cfg: TrainConfig, workers: int) -> int:
    """Steps of the first epoch, streamed through Ray Data; later ones come from memory."""
    plan = make_plan(cfg, workers)
    fetch = plan.micro_batch_images * max(1, FETCH_IMAGES // plan.micro_batch_images)
    per_worker = ShardSet(cfg.data.train).num_rows // workers // fetch * fetch
    return per_worker // (plan.micro_batch_images * plan.grad_accum)


def _median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="1M")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="astropt-bench-"))
    train, val = ensure_synthetic_dataset(str(work / "data"), 4000, 64, 0)
    model = ModelConfig.from_preset(args.preset, image_size=64)
    cfg = TrainConfig(
        model=model, data=DataConfig(train=str(train), val=str(val)),
        tokens=args.steps * 960, global_batch_tokens=960, micro_batch_images=64,
        optim=OptimConfig(lr=1e-3), eval_every=10**6, checkpoint_every=10**6, log_every=10,
        eval_batches=1,
    )  # fmt: skip
    check_data(cfg.data, cfg.model.image)
    connect(num_cpus=os.cpu_count())
    tracking = TrackingConfig(uri=f"sqlite:///{work / 'mlflow.db'}", experiment="bench")
    init_world_of_one("gloo")  # for (a2)
    runs: dict[str, list[dict[str, float]]] = {
        "a_plain": [], "a2_deepspeed_in_process": [], "b_ray_1_worker": [], "c_ray_2_workers": []
    }  # fmt: skip
    for repeat in range(args.repeats):
        runs["a_plain"].append(in_process(cfg, args.steps, through_engine=False))
        runs["a2_deepspeed_in_process"].append(in_process(cfg, args.steps, through_engine=True))
        for key, workers in (("b_ray_1_worker", 1), ("c_ray_2_workers", 2)):
            runs[key].append(ray_cell(cfg, workers, tracking, f"{key}-{repeat}", str(work / "ray")))
        print(json.dumps({k: v[-1] for k, v in runs.items()}), flush=True)
    plain = [r["tokens_per_s"] for r in runs["a_plain"]]
    summary = {
        "preset": args.preset, "image_size": 64, "global_batch_tokens": 960,
        "steps": args.steps, "repeats": args.repeats, "cpus": os.cpu_count(),
        "runs": runs,
        "ratio_a2_over_a": _ratio(runs["a2_deepspeed_in_process"], plain),
        "ratio_b_over_a": _ratio(runs["b_ray_1_worker"], plain),
        "ratio_c_over_a": _ratio(runs["c_ray_2_workers"], plain),
        "target_b_over_a": 0.95,
        "load_average": os.getloadavg(),
    }  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2))
    ratios = ("ratio_a2_over_a", "ratio_b_over_a", "ratio_c_over_a")
    print(json.dumps({k: summary[k] for k in ratios}, indent=2))


def _ratio(runs: list[dict[str, float]], plain: list[float]) -> dict[str, float]:
    """Per-repeat ratios (each against the plain run of the same round), median and spread."""
    ratios = [r["tokens_per_s"] / p for r, p in zip(runs, plain, strict=True)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


if __name__ == "__main__":
    main()
