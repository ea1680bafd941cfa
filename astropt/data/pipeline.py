"""Shard sets as Ray Datasets, and the batch stream a training worker draws from its share.

Only the images' bytes cross the object store (uint8, 4x less than float32), straight from the
Parquet reader: no map stage, so no extra task per block and no extra copy. A worker turns each
fetched block into a uint8 (n, C, H, W) tensor itself (one copy); patchifying and standardising
happen later, on its device, in one vectorised call per micro-batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import ray.data
import torch
from ray.data import DataContext, Dataset
from ray.data.datasource import FileShuffleConfig

from astropt.data.schema import IMAGE_COLUMN, ShardSet, decode_images

BLOCK_BYTES = 8 * 1024 * 1024  # small blocks stream; Ray's default blocks of ~100 MB spill
FETCH_IMAGES = 512  # images per request to Ray Data (rounded to a multiple of the micro-batch)


def shard_dataset(uri: str, *, shuffle_seed: int | None, cpus: float = 0.5) -> Dataset:
    """A stream of rows {"image": the bytes of one uint8 (C, H, W) image} from a shard set.

    With `shuffle_seed`, file order is reshuffled every epoch (seeded, so runs repeat); without
    it the order is the files' sorted order.
    """
    DataContext.get_current().target_max_block_size = BLOCK_BYTES
    shuffle = None if shuffle_seed is None else FileShuffleConfig(seed=shuffle_seed)
    dataset = ray.data.read_parquet(uri, shuffle=shuffle, num_cpus=cpus)
    return dataset.select_columns([IMAGE_COLUMN])


class ImageStream:
    """Full micro-batches of uint8 (n, C, H, W) images from a worker's share, epoch after epoch.

    Every worker gets the same number of rows per epoch (Ray Train splits with equal=True) and
    only full batches are kept, so all workers take the same number of steps per epoch and no
    collective waits on a worker that ran dry. Images are fetched a few hundred at a time and
    cut into micro-batches here: each fetch costs Ray Data's split coordinator CPU time, which
    on small machines is taken from training.

    With `keep_in_memory`, the first epoch's images are kept and every later epoch is a fresh
    permutation of them (seeded by `seed`, the epoch and `rank`): no re-reading, and no
    restart of Ray Data's stream, which cost 4-6 s at every epoch boundary on 2 cores. The
    driver asks for it only where a worker's share fits the configured memory budget.
    """

    def __init__(
        self,
        shard: ray.data.DataIterator,
        shape: tuple[int, int, int],
        batch_size: int,
        *,
        keep_in_memory: bool = False,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        self.shard, self.shape, self.batch_size = shard, shape, batch_size
        self.keep_in_memory, self.seed, self.rank = keep_in_memory, seed, rank
        self.fetch = batch_size * max(1, FETCH_IMAGES // batch_size)
        self.kept: list[torch.Tensor] = []
        self.epoch = 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            if self.epoch > 0 and self.kept:
                yield from self._permuted_epoch()
            else:
                yield from self._streamed_epoch()
            self.epoch += 1

    def _streamed_epoch(self) -> Iterator[torch.Tensor]:
        fetched = 0
        for table in self.shard.iter_batches(
            batch_size=self.fetch, batch_format="pyarrow", drop_last=True, prefetch_batches=2
        ):
            fetched += 1
            images = torch.from_numpy(np.array(decode_images(table[IMAGE_COLUMN], self.shape)))
            if self.keep_in_memory:
                self.kept.append(images)
            yield from images.split(self.batch_size)
        if fetched:
            return
        if self.fetch == self.batch_size:
            raise ValueError(f"the training set gives a worker under {self.batch_size} images")
        self.fetch = self.batch_size  # a small set: fetch one micro-batch at a time

    def _permuted_epoch(self) -> Iterator[torch.Tensor]:
        if len(self.kept) > 1:
            self.kept = [torch.cat(self.kept)]
        images = self.kept[0]
        order = epoch_order(len(images), self.seed, self.epoch, self.rank)
        for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
            yield images[order[start : start + self.batch_size]]


def epoch_order(n: int, seed: int, epoch: int, rank: int) -> torch.Tensor:
    """The order of a worker's kept images in one epoch: a permutation of range(n) that depends
    only on (seed, epoch, rank), so a run repeats and its workers do not move in step."""
    state = np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(state)))


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
