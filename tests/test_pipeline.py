"""The worker's image stream: Ray Data epochs of full micro-batches, or its share kept in memory."""

from __future__ import annotations

import itertools

import pytest
import torch

from astropt.data.pipeline import FETCH_IMAGES, ImageStream, epoch_order, shard_dataset
from astropt.data.schema import IMAGE_COLUMN, ShardSet, decode_images
from astropt.data.synth import generate

SHAPE = (3, 32, 32)
BATCH = 24


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> str:
    """1,000 training images in shards of 128 (8 files)."""
    root = tmp_path_factory.mktemp("stream")
    generate(str(root), 1110, SHAPE[1], shard_size=128)
    return str(root / "train")


def _every_image(uri: str) -> list[bytes]:
    shards = ShardSet(uri)
    batches = shards.iter_batches([IMAGE_COLUMN])
    return sorted(i.tobytes() for b in batches for i in decode_images(b[IMAGE_COLUMN], SHAPE))


def _epochs(stream: ImageStream, per_epoch: int, epochs: int) -> list[list[torch.Tensor]]:
    batches = list(itertools.islice(iter(stream), per_epoch * epochs))
    return [batches[e * per_epoch : (e + 1) * per_epoch] for e in range(epochs)]


def _as_bytes(batches: list[torch.Tensor]) -> list[bytes]:
    return [image.numpy().tobytes() for batch in batches for image in batch]


@pytest.mark.parametrize("keep_in_memory", [False, True])
def test_every_epoch_gives_the_same_full_batches_of_the_shard_set(
    ray_local, small_set, keep_in_memory
):
    fetch = BATCH * (FETCH_IMAGES // BATCH)
    fetched = ShardSet(small_set).num_rows // fetch * fetch  # whole fetches; the rest is dropped
    per_epoch = fetched // BATCH
    shard = shard_dataset(small_set, shuffle_seed=0).iterator()
    stream = ImageStream(shard, SHAPE, BATCH, keep_in_memory=keep_in_memory, seed=3)
    epochs = _epochs(stream, per_epoch, 3 if keep_in_memory else 2)
    everything = set(_every_image(small_set))
    first = sorted(_as_bytes(epochs[0]))
    for batches in epochs:
        assert all(b.shape == (BATCH, *SHAPE) and b.dtype == torch.uint8 for b in batches)
        images = sorted(_as_bytes(batches))
        assert len(set(images)) == fetched and set(images) <= everything
        if keep_in_memory:
            assert images == first  # later epochs are the first epoch's images, reordered
    if keep_in_memory:
        assert _as_bytes(epochs[1]) != _as_bytes(epochs[2]), "each epoch has its own order"
    assert bool(stream.kept) == keep_in_memory


def test_kept_epochs_are_permutations_fixed_by_seed_epoch_and_rank():
    order = epoch_order(1000, seed=0, epoch=1, rank=0)
    assert sorted(order.tolist()) == list(range(1000))
    assert torch.equal(order, epoch_order(1000, seed=0, epoch=1, rank=0))
    for other in ({"seed": 1, "epoch": 1, "rank": 0}, {"seed": 0, "epoch": 2, "rank": 0},
                  {"seed": 0, "epoch": 1, "rank": 1}):  # fmt: skip
        assert not torch.equal(order, epoch_order(1000, **other)), other


def test_a_share_smaller_than_one_fetch_is_read_a_micro_batch_at_a_time(ray_local, small_set):
    few = shard_dataset(small_set, shuffle_seed=None).limit(100).iterator()
    batches = list(itertools.islice(iter(ImageStream(few, SHAPE, BATCH)), 8))
    assert all(len(b) == BATCH for b in batches)  # 4 per pass of 100 images, 2 passes
    assert len(set(_as_bytes(batches))) >= 96


def test_a_share_smaller_than_one_micro_batch_is_an_error(ray_local, small_set):
    few = shard_dataset(small_set, shuffle_seed=None).limit(BATCH - 1).iterator()
    with pytest.raises(ValueError, match=f"under {BATCH} images"):
        next(iter(ImageStream(few, SHAPE, BATCH)))
