"""The worker's image stream: a fixed order per (seed, rank, epoch) that a restart continues."""

from __future__ import annotations

import itertools

import pytest
import torch

from astropt.data.pipeline import (
    ImageStream,
    ShardFiles,
    epoch_order,
    streamed_batches_per_epoch,
)
from astropt.data.schema import IMAGE_COLUMN, ShardSet, decode_images
from astropt.data.synth import generate

SHAPE = (3, 32, 32)
BATCH = 24


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> ShardFiles:
    """About 1,000 training images in shards of 128 (8 files)."""
    root = tmp_path_factory.mktemp("stream")
    generate(str(root), 1110, SHAPE[1], shard_size=128)
    return ShardFiles.of(str(root / "train"))


def _every_image(uri: str) -> set[bytes]:
    batches = ShardSet(uri).iter_batches([IMAGE_COLUMN])
    return {i.tobytes() for b in batches for i in decode_images(b[IMAGE_COLUMN], SHAPE)}


def _stream(files: ShardFiles, in_memory: bool, **kwargs) -> ImageStream:
    options = {"seed": 3, "rank": 0, "world": 1} | kwargs
    return ImageStream(files, SHAPE, BATCH, in_memory=in_memory, **options)


def _take(stream: ImageStream, n: int) -> list[torch.Tensor]:
    return list(itertools.islice(iter(stream), n))


def _as_bytes(batches: list[torch.Tensor]) -> list[bytes]:
    return [image.numpy().tobytes() for batch in batches for image in batch]


def test_kept_epochs_are_permutations_fixed_by_seed_epoch_and_rank():
    order = epoch_order(1000, seed=0, epoch=1, rank=0)
    assert sorted(order.tolist()) == list(range(1000))
    assert torch.equal(order, epoch_order(1000, seed=0, epoch=1, rank=0))
    for other in ({"seed": 1, "epoch": 1, "rank": 0}, {"seed": 0, "epoch": 2, "rank": 0},
                  {"seed": 0, "epoch": 1, "rank": 1}):  # fmt: skip
        assert not torch.equal(order, epoch_order(1000, **other)), other


def test_in_memory_epochs_are_reorderings_of_the_whole_share(files):
    per_epoch = sum(files.rows) // BATCH
    epochs = [_take(_stream(files, True, start_batch=e * per_epoch), per_epoch) for e in range(3)]
    everything = _every_image(files.uri)
    for batches in epochs:
        assert all(b.shape == (BATCH, *SHAPE) and b.dtype == torch.uint8 for b in batches)
        images = _as_bytes(batches)
        assert len(set(images)) == per_epoch * BATCH and set(images) <= everything
    share, used = sum(files.rows), per_epoch * BATCH  # each epoch leaves a partial batch out
    overlap = set(_as_bytes(epochs[0])) & set(_as_bytes(epochs[1]))
    assert len(overlap) >= used - (share - used)
    assert _as_bytes(epochs[0]) != _as_bytes(epochs[1]), "each epoch has its own order"


def test_two_workers_hold_disjoint_equal_shares(files):
    shares = [_take(_stream(files, True, rank=r, world=2), 10) for r in (0, 1)]
    first, second = (set(_as_bytes(s)) for s in shares)
    assert len(first) == len(second) == 10 * BATCH and not first & second


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_stream_started_at_batch_k_continues_the_order_exactly(ray_local, files, in_memory):
    """What a run restarted from a checkpoint, or a branch started from its trunk's, sees:
    the same batches as an uninterrupted stream, across an epoch boundary."""
    per_epoch = (
        sum(files.rows) // BATCH
        if in_memory
        else streamed_batches_per_epoch(files, seed=3, epoch=0, world=1, micro=BATCH)
    )
    whole = _take(_stream(files, in_memory), per_epoch + 5)
    resumed = _take(_stream(files, in_memory, start_batch=per_epoch - 3), 8)
    assert _as_bytes(resumed) == _as_bytes(whole[per_epoch - 3 :])


def test_streamed_epochs_read_every_workers_files_in_a_fixed_order(ray_local, files):
    per_epoch = [streamed_batches_per_epoch(files, 3, e, 2, BATCH) for e in (0, 1)]
    ranks = [_take(_stream(files, False, rank=r, world=2), per_epoch[0]) for r in (0, 1)]
    again = _take(_stream(files, False, rank=0, world=2), per_epoch[0])
    assert _as_bytes(again) == _as_bytes(ranks[0])
    assert not set(_as_bytes(ranks[0])) & set(_as_bytes(ranks[1]))
    assert all(len(b) == BATCH for b in ranks[0] + ranks[1])


def test_a_share_smaller_than_one_micro_batch_is_an_error(files):
    few = ShardFiles(files.uri, files.paths[:1], (BATCH - 1,))
    with pytest.raises(ValueError, match=f"under {BATCH} images"):
        next(iter(ImageStream(few, SHAPE, BATCH, in_memory=False, seed=0, rank=0, world=1)))
