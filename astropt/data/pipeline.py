"""The batch stream a training worker draws from its share of a shard set, in a fixed order.

Every image a worker sees is fixed by (seed, world size, rank, micro-batch, step), so a run
restarted from its step-S checkpoint, or a branch started from its trunk's step-S checkpoint,
continues the data exactly where it was: `ImageStream(..., start_batch=S x accumulation)`.

Two ways to hold the data, chosen by the driver (`TrainPlan.data_in_memory`):

- In memory, for a worker's share of at most `data.memory_mb` (a laptop's synthetic set): the
  worker reads its share once, straight from Parquet (rows `rank::world`, each worker the same
  number), and each epoch is a permutation of it fixed by (seed, epoch, rank). No Ray Data
  stream to start, no epoch boundary to wait at.
- Streamed through Ray Data, for anything larger (the real 512 x 512 sets): each epoch the files
  are shuffled by (seed, epoch), dealt round-robin to the workers, and read in that order
  (`preserve_order`); every worker stops at the same batch count, so no collective waits on a
  worker that ran dry.

Only the images' bytes are read (uint8, 4x less than float32); patchifying and standardising
happen on the worker's device, one vectorised call per micro-batch.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray.data
import torch
from ray.data import DataContext

from astropt.data.schema import IMAGE_COLUMN, ShardSet, decode_images
from astropt.storage import resolve

BLOCK_BYTES = 8 * 1024 * 1024  # small blocks stream; Ray's default blocks of ~100 MB spill
FETCH_IMAGES = 512  # images per request to Ray Data (rounded to a multiple of the micro-batch)


@dataclass(frozen=True)
class ShardFiles:
    """The files of a training set with their row counts, as the driver read them."""

    uri: str
    paths: tuple[str, ...]
    rows: tuple[int, ...]

    @classmethod
    def of(cls, uri: str) -> ShardFiles:
        shards = ShardSet(uri)
        return cls(uri, tuple(shards.uris), tuple(f.num_rows for f in shards.files))


def _permutation(n: int, *key: int) -> torch.Tensor:
    state = np.random.SeedSequence(list(key)).generate_state(1)[0]
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(state)))


def epoch_order(n: int, seed: int, epoch: int, rank: int) -> torch.Tensor:
    """A permutation of range(n) that depends only on (seed, epoch, rank): a run repeats, and
    its workers do not move in step."""
    return _permutation(n, 0, seed, epoch, rank)


def _file_deal(files: ShardFiles, seed: int, epoch: int, world: int) -> list[list[int]]:
    """Each rank's file indices for one epoch: shuffled by (seed, epoch), dealt round-robin."""
    order = _permutation(len(files.paths), 1, seed, epoch).tolist()
    return [order[rank::world] for rank in range(world)]


def streamed_batches_per_epoch(files: ShardFiles, seed: int, epoch: int, world: int, micro: int):
    """Micro-batches every worker takes in a streamed epoch: the fewest any worker can fill."""
    deal = _file_deal(files, seed, epoch, world)
    return min(sum(files.rows[i] for i in mine) // micro for mine in deal)


class ImageStream:
    """Full micro-batches of uint8 (n, C, H, W) images from a worker's share, epoch after
    epoch, starting after `start_batch` micro-batches."""

    def __init__(
        self,
        files: ShardFiles,
        shape: tuple[int, int, int],
        micro: int,
        *,
        in_memory: bool,
        seed: int,
        rank: int,
        world: int,
        start_batch: int = 0,
    ) -> None:
        self.files, self.shape, self.micro = files, shape, micro
        self.in_memory, self.seed, self.rank, self.world = in_memory, seed, rank, world
        self.start_batch = start_batch
        self.share: torch.Tensor | None = None

    def __iter__(self) -> Iterator[torch.Tensor]:
        skip, epoch = self.start_batch, 0
        while True:
            per_epoch = self._per_epoch(epoch)
            if per_epoch < 1:
                raise ValueError(
                    f"the training set {self.files.uri} gives worker {self.rank} of {self.world} "
                    f"under {self.micro} images (one micro-batch) per epoch"
                )
            if skip >= per_epoch:
                skip -= per_epoch
            else:
                source = self._from_memory if self.in_memory else self._streamed
                yield from source(epoch, skip, per_epoch)
                skip = 0
            epoch += 1

    def _per_epoch(self, epoch: int) -> int:
        if self.in_memory:
            return len(self._share()) // self.micro
        return streamed_batches_per_epoch(self.files, self.seed, epoch, self.world, self.micro)

    def _share(self) -> torch.Tensor:
        if self.share is None:
            self.share = worker_share(self.files, self.shape, self.rank, self.world)
        return self.share

    def _from_memory(self, epoch: int, skip: int, per_epoch: int) -> Iterator[torch.Tensor]:
        share = self._share()
        order = epoch_order(len(share), self.seed, epoch, self.rank)
        for batch in range(skip, per_epoch):
            yield share[order[batch * self.micro : (batch + 1) * self.micro]]

    def _streamed(self, epoch: int, skip: int, per_epoch: int) -> Iterator[torch.Tensor]:
        mine = _file_deal(self.files, self.seed, epoch, self.world)[self.rank]
        skip_rows = skip * self.micro
        while mine and self.files.rows[mine[0]] <= skip_rows:  # whole files before the start
            skip_rows -= self.files.rows[mine.pop(0)]
        paths = [self.files.paths[i] for i in mine]
        left = (per_epoch - skip) * self.micro
        pending: list[torch.Tensor] = []
        for table in _read_in_order(paths, self.micro):
            images = torch.from_numpy(np.array(decode_images(table[IMAGE_COLUMN], self.shape)))
            images, skip_rows = images[skip_rows:], max(0, skip_rows - len(images))
            pending.append(images[:left])
            left -= len(pending[-1])
            yield from _full_batches(pending, self.micro)
            if left == 0:
                return


@functools.lru_cache(maxsize=1)
def worker_share(
    files: ShardFiles, shape: tuple[int, int, int], rank: int, world: int
) -> torch.Tensor:
    """A worker's images: rows rank, rank + world, ... of the set, as many as any rank. The
    last share read stays cached in this process: a reused Tune trial that trains the sweep's
    next run in its own process finds it there."""
    table = read_images(files.paths)
    each = table.num_rows // world
    rows = np.arange(rank, each * world, world)
    images = decode_images(table.column(IMAGE_COLUMN).take(rows), shape)
    return torch.from_numpy(np.ascontiguousarray(images))


def _full_batches(pending: list[torch.Tensor], micro: int) -> Iterator[torch.Tensor]:
    """Cut the pending images into full micro-batches; keep the remainder pending."""
    joined = torch.cat(pending) if len(pending) > 1 else pending[0]
    whole = len(joined) // micro * micro
    pending[:] = [joined[whole:]]
    yield from joined[:whole].split(micro)


def _read_in_order(paths: Sequence[str], micro: int) -> Iterator[pa.Table]:
    """The image column of `paths`, in that order, streamed through Ray Data."""
    context = DataContext.get_current()
    context.target_max_block_size = BLOCK_BYTES
    context.execution_options.preserve_order = True
    dataset = ray.data.read_parquet(list(paths), num_cpus=0.5).select_columns([IMAGE_COLUMN])
    fetch = micro * max(1, FETCH_IMAGES // micro)
    yield from dataset.iter_batches(batch_size=fetch, batch_format="pyarrow", prefetch_batches=2)


def read_images(uris: Sequence[str]) -> pa.Table:
    """The image column of every file, in order, read directly with pyarrow."""
    tables = []
    for uri in uris:
        fs, path = resolve(uri)
        tables.append(pq.read_table(path, columns=[IMAGE_COLUMN], filesystem=fs))
    return pa.concat_tables(tables)


def validation_batches(uri: str, batch_size: int, n_batches: int) -> list[torch.Tensor]:
    """The first `n_batches` full batches of a shard set in file order: a fixed validation set,
    the same rows in the same order for every run so that losses compare."""
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
