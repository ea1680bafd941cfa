"""Data pipeline headroom: images/s the data path delivers to a worker vs what training consumes.

    python benchmarks/data_pipeline.py [--batches 200] [--images 16000]
    python benchmarks/data_pipeline.py --quick    # 2,000 images, 30 batches, 1M only

Both ways a worker can hold its share of a training set of 64 x 64 galaxies in Parquet shards
(`astropt.data.pipeline.ImageStream`), each followed by the worker's preprocessing
(`images_to_tokens`), without training:

- in memory (a share of at most `data.memory_mb`, a laptop's synthetic set): the time to read
  and decode the share straight from Parquet (until the first batch), then images/s drawn from
  memory; measured in this process, as in a run trained in its trial's process.
- streamed through Ray Data (larger sets): one Ray Train worker reads its files in order
  (`ray.data.read_parquet`, `preserve_order`); time to the first batch, then images/s.

Consumed: images/s of a training step (forward, backward, AdamW) of the 1M, 21M and 89M presets
on the same cores. Target: each path delivers >= 5 x the 1M preset's consumption.
Results: benchmarks/results/data_pipeline.json (`--quick`: the temp folder; or `--out`).
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
from astropt.config import ImageConfig, ModelConfig
from astropt.data.pipeline import ImageStream, ShardFiles
from astropt.data.synthetic_sets import ensure_synthetic_dataset
from astropt.model import AstroPT
from astropt.patches import images_to_tokens

RESULTS = Path(__file__).parent / "results" / "data_pipeline.json"
IMAGE = ImageConfig(image_size=64, patch_size=16)
BATCH = 64
WARMUP_BATCHES = 10


def drain(files: ShardFiles, batches: int, in_memory: bool) -> dict[str, float]:
    """Draw and preprocess batches only: seconds to the first batch, then images/s after a
    warm-up."""
    started = time.perf_counter()
    stream = iter(
        ImageStream(files, IMAGE.shape, BATCH, in_memory=in_memory, seed=0, rank=0, world=1)
    )
    images_to_tokens(next(stream), IMAGE.patch_size)
    first_batch_s = time.perf_counter() - started
    for _ in range(WARMUP_BATCHES):
        images_to_tokens(next(stream), IMAGE.patch_size)
    started = time.perf_counter()
    for _ in range(batches):
        images_to_tokens(next(stream), IMAGE.patch_size)
    rate = batches * BATCH / (time.perf_counter() - started)
    return {"first_batch_s": first_batch_s, "images_per_s": rate}


def streamed(files: ShardFiles, batches: int, storage: str) -> dict[str, float]:
    """`drain` of the Ray Data stream in one Ray Train worker (1 CPU; the rest reads)."""
    trainer = TorchTrainer(
        lambda config: drain(files, config["batches"], in_memory=False),
        train_loop_config={"batches": batches},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name="drain", storage_path=storage),
    )
    return trainer.fit().return_value


def consumed(preset: str, steps: int = 5) -> float:
    """Images/s of full training steps of `preset` at 64 x 64 on all cores."""
    torch.set_num_threads(os.cpu_count() or 1)
    model = AstroPT(ModelConfig.from_preset(preset, image=IMAGE))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randint(0, 255, (BATCH, *IMAGE.shape), dtype=torch.uint8)
    tokens = images_to_tokens(images, IMAGE.patch_size)
    for step in range(steps + 1):
        if step == 1:
            started = time.perf_counter()
        AstroPT.loss(model(tokens), tokens[:, 1:]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * BATCH / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--images", type=int, default=16000, help="synthetic galaxies to make")
    parser.add_argument("--quick", action="store_true", help="2,000 images, 30 batches, 1M only")
    parser.add_argument("--out", type=Path, help="default: results/, or with --quick the temp dir")
    args = parser.parse_args()
    presets = ("1M", "21M", "89M")
    if args.quick:
        args.batches, args.images, presets = 30, 2000, ("1M",)
    out = args.out or (
        Path(tempfile.gettempdir()) / "data_pipeline-quick.json" if args.quick else RESULTS
    )
    work = Path(tempfile.mkdtemp(prefix="astropt-bench-"))
    train, _ = ensure_synthetic_dataset(str(work / "data"), args.images, IMAGE.image_size, 0)
    files = ShardFiles.of(train)
    rates = {preset: consumed(preset) for preset in presets}
    memory = drain(files, args.batches, in_memory=True)
    connection = connect(num_cpus=os.cpu_count())
    try:
        stream = streamed(files, args.batches, str(work / "ray"))
    finally:
        connection.shutdown()
    result = {
        "in_memory": memory | {"headroom_vs_1M": memory["images_per_s"] / rates["1M"]},
        "streamed_one_worker": stream | {"headroom_vs_1M": stream["images_per_s"] / rates["1M"]},
        "consumed_images_per_s": rates,
        "target_headroom_vs_1M": 5.0,
        "train_images": sum(files.rows),
        "batches": args.batches,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
