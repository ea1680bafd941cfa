"""Shard sets as Ray Datasets, and the batch streams a training worker draws from them.

Only uint8 images cross the object store (4x less than float32); patchifying and standardising
happen on the worker, on its device, in one vectorised call per micro-batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count

import numpy as np
import pyarrow as pa
import ray.data
import torch
from ray.data import DataContext, Dataset
from ray.data.datasource import FileShuffleConfig

from astropt.data.schema import IMAGE_COLUMN, ShardSet, decode_images

BLOCK_BYTES = 8 * 1024 * 1024  # small blocks stream; Ray's default blocks of ~100 MB spill
FETCH_IMAGES = 512  # images per request to Ray Data (rounded to a multiple of the micro-batch)


def _decode_batch(batch: pa.Table, shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    return {IMAGE_COLUMN: decode_images(batch.column(IMAGE_COLUMN), shape)}


def shard_dataset(
    uri: str, shape: tuple[int, int, int], *, shuffle_seed: int | None, cpus: float = 0.5
) -> Dataset:
    """A stream of {"image": uint8 (C, H, W)} rows from a shard set's Parquet files.

    With `shuffle_seed`, file order is reshuffled every epoch (seeded, so runs repeat); without
    it the order is the files' sorted order, which validation relies on.
    """
    DataContext.get_current().target_max_block_size = BLOCK_BYTES
    shuffle = None if shuffle_seed is None else FileShuffleConfig(seed=shuffle_seed)
    dataset = ray.data.read_parquet(uri, shuffle=shuffle, num_cpus=cpus).select_columns(
        [IMAGE_COLUMN]
    )
    return dataset.map_batches(
        _decode_batch, fn_kwargs={"shape": shape}, batch_format="pyarrow", num_cpus=cpus
    )


def endless_batches(shard: ray.data.DataIterator, batch_size: int) -> Iterator[torch.Tensor]:
    """Full micro-batches of uint8 images, epoch after epoch.

    Every worker gets the same number of rows per epoch (Ray Train splits with equal=True) and
    only full batches are kept, so all workers take the same number of steps per epoch and no
    collective waits on a worker that ran dry. Images are fetched from Ray Data a few hundred at
    a time and cut into micro-batches here: each fetch costs the split coordinator CPU time,
    which on small machines is taken from training.
    """
    fetch = batch_size * max(1, FETCH_IMAGES // batch_size)
    for _ in count():
        fetched = 0
        for batch in shard.iter_torch_batches(
            batch_size=fetch, drop_last=True, prefetch_batches=2, device="cpu"
        ):
            fetched += 1
            yield from batch[IMAGE_COLUMN].split(batch_size)
        if not fetched:
            if fetch == batch_size:
                raise ValueError(f"the training set gives a worker under {batch_size} images")
            fetch = batch_size  # a small set: fetch one micro-batch at a time


def validation_batches(uri: str, batch_size: int, n_batches: int) -> list[torch.Tensor]:
    """The first `n_batches` full batches of a shard set in file order: a fixed validation set.

    Read directly with pyarrow rather than through Ray Data: it is small, read once per run,
    and must be the same rows in the same order for every run so that losses compare.
    """
    shards = ShardSet(uri)
    shape = shards.image_shape
    batches: list[torch.Tensor] = []
    for record_batch in shards.iter_batches([IMAGE_COLUMN], batch_size=batch_size):
        if len(batches) == n_batches:
            break
        if record_batch.num_rows == batch_size:
            images = decode_images(record_batch.column(IMAGE_COLUMN), shape)
            batches.append(torch.from_numpy(images.copy()))
    return batches
