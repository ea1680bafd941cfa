"""Data pipeline headroom: images/s that Ray Data delivers to a worker vs what training consumes.

    python benchmarks/data_pipeline.py [--batches 200]

Delivered: one Ray Train worker drawing micro-batches of 64 x 64 galaxies from Parquet shards
through the project's Ray Data pipeline (`shard_dataset`, `ImageStream`) and preprocessing
them (`images_to_tokens`), without training. Consumed: images/s of a training step (forward,
backward, AdamW) of the 1M, 21M and 89M presets on the same cores. Target: delivered >= 5 x the
1M preset's consumption. Results: benchmarks/results/data_pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import ray.train
import torch
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer

from astropt.cluster import connect
from astropt.config import ModelConfig
from astropt.data.pipeline import ImageStream, shard_dataset
from astropt.data.synthetic_sets import ensure_synthetic_dataset
from astropt.model import AstroPT
from astropt.patches import images_to_tokens

RESULTS = Path(__file__).parent / "results" / "data_pipeline.json"
BATCH = 64


def drain(config: dict) -> None:
    """Worker loop: pull and preprocess batches only; report images/s after a warm-up."""
    stream = iter(ImageStream(ray.train.get_dataset_shard("train"), (3, 64, 64), BATCH))
    for _ in range(10):
        images_to_tokens(next(stream), 16)
    started = time.perf_counter()
    for _ in range(config["batches"]):
        images_to_tokens(next(stream), 16)
    rate = config["batches"] * BATCH / (time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as tmp:
        ray.train.report(
            {"images_per_s": rate}, checkpoint=ray.train.Checkpoint.from_directory(tmp)
        )


def delivered(train_uri: str, batches: int, storage: str) -> float:
    trainer = TorchTrainer(
        drain,
        train_loop_config={"batches": batches},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        datasets={"train": shard_dataset(train_uri, shuffle_seed=0)},
        run_config=ray.train.RunConfig(name="drain", storage_path=storage),
    )
    return trainer.fit().metrics["images_per_s"]


def consumed(preset: str, steps: int = 5) -> float:
    """Images/s of full training steps of `preset` at 64 x 64 on all cores."""
    torch.set_num_threads(os.cpu_count() or 1)
    model = AstroPT(ModelConfig.from_preset(preset, image_size=64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = images_to_tokens(torch.randint(0, 255, (BATCH, 3, 64, 64), dtype=torch.uint8), 16)
    for step in range(steps + 1):
        if step == 1:
            started = time.perf_counter()
        _, loss = model(tokens)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * BATCH / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="astropt-bench-"))
    train, _ = ensure_synthetic_dataset(str(work / "data"), 16000, 64, 0)
    rates = {preset: consumed(preset) for preset in ("1M", "21M", "89M")}
    connect(num_cpus=os.cpu_count())
    supply = delivered(str(train), args.batches, str(work / "ray"))
    result = {
        "delivered_images_per_s": supply,
        "consumed_images_per_s": rates,
        "headroom_vs_1M": supply / rates["1M"],
        "target_headroom_vs_1M": 5.0,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
