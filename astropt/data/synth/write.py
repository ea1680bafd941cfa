"""Synthetic galaxy sets: ids, block-by-block iteration, train/val shards and PNG previews.

Galaxy ``i`` depends only on the seed, ``i`` and the image size and bands: its random numbers
come from a ``SeedSequence(seed, spawn_key=(i // 256,))`` block stream (`galaxy_block`), so shard
size and ``--n`` change only how many galaxies are written, never what they look like.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow.fs as pafs

from astropt.data.schema import shard_schema
from astropt.data.synth.observe import BLOCK_SIZE, galaxy_block
from astropt.data.synth.params import METADATA_FIELDS, WAVELENGTH_UM, check_bands
from astropt.data.writers import SplitWriter
from astropt.storage import resolve


def object_id(index: int) -> str:
    """The id of galaxy `index` (which set it lands in is a hash of it: `is_validation`)."""
    return f"synth-{index:09d}"


def iter_galaxies(
    n: int, size: int, bands: Sequence[str], seed: int = 0
) -> Iterator[tuple[list[str], np.ndarray, dict[str, np.ndarray]]]:
    """(object ids, uint8 images, metadata columns) block by block, for galaxies 0 ... n-1."""
    check_bands(bands)
    for block, start in enumerate(range(0, n, BLOCK_SIZE)):
        params, images = galaxy_block(seed, block, size, bands, min(BLOCK_SIZE, n - start))
        ids = [object_id(i) for i in range(start, start + len(images))]
        yield ids, images, {f.name: params[f.name] for f in METADATA_FIELDS}


def generate(
    out: str,
    n: int,
    size: int,
    bands: Sequence[str] = ("g", "r", "z"),
    val_fraction: float = 0.1,
    seed: int = 0,
    shard_size: int = 1024,
    filesystem: pafs.FileSystem | None = None,
) -> dict[str, int]:
    """Write `n` galaxies to out/train and out/val; the number of rows of each."""
    check_bands(bands)
    schema = shard_schema((len(bands), size, size), bands, METADATA_FIELDS)
    writer = SplitWriter(out, schema, val_fraction, seed, shard_size, filesystem)
    for ids, images, metadata in iter_galaxies(n, size, bands, seed):
        writer.add(ids, images, metadata)
    return writer.close()


def save_preview(images: np.ndarray, bands: Sequence[str], path: str, columns: int = 4) -> None:
    """A PNG mosaic of (n, bands, H, W) uint8 images: reddest band as R, bluest as B."""
    from PIL import Image

    order = np.argsort([WAVELENGTH_UM.get(b, 0) for b in bands])
    rgb = images[:, [order[-1], order[len(order) // 2], order[0]]].transpose(0, 2, 3, 1)
    rows = -(-len(rgb) // columns)
    h, w = rgb.shape[1:3]
    mosaic = np.zeros((rows * (h + 2), columns * (w + 2), 3), dtype=np.uint8)
    for index, tile in enumerate(rgb):
        r, c = divmod(index, columns)
        mosaic[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = tile
    zoom = max(1, 256 // w)
    picture = Image.fromarray(mosaic).resize(
        (mosaic.shape[1] * zoom, mosaic.shape[0] * zoom), Image.Resampling.NEAREST
    )
    fs, location = resolve(path)
    with fs.open_output_stream(location) as handle:
        picture.save(handle, format="PNG")
