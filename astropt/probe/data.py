"""Reading the images and metadata of a shard set for probing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs

from astropt.data.schema import IMAGE_COLUMN, ShardSet, decode_images
from astropt.probe.errors import ProbeInputError
from astropt.storage import join, resolve

#: Arrow types a default probe target may have: numbers and booleans (strings only on request).
NUMERIC_TYPES = (pa.float64(), pa.int64(), pa.bool_())


@dataclass(frozen=True)
class ProbeData:
    """The first `max_images` images of a shard set (uint8 (n, C, H, W)) and their metadata."""

    uri: str
    images: np.ndarray
    metadata: pd.DataFrame


def open_shards(uri: str) -> ShardSet:
    """The shard set at `uri`, or the `val/` set of a data root that holds train/ and val/."""
    fs, path = resolve(uri)
    if fs.get_file_info(join(path, "val")).type == pafs.FileType.Directory:
        uri = join(uri, "val")
    try:
        return ShardSet(uri)
    except FileNotFoundError as err:
        raise ProbeInputError(f"no probe data: {err}") from err


def numeric_columns(shards: ShardSet) -> list[str]:
    """Metadata columns that are numbers or booleans, in schema order."""
    schema = shards.schema
    return [c for c in shards.metadata_columns if schema.field(c).type in NUMERIC_TYPES]


def require_columns(shards: ShardSet, columns: Sequence[str], what: str) -> None:
    """Refuse a column the shard set lacks, listing the ones it has."""
    available = shards.metadata_columns
    unknown = [c for c in columns if c not in available]
    if unknown:
        raise ProbeInputError(
            f"unknown {what} column {', '.join(map(repr, unknown))} in {shards.uri}; "
            f"available: {', '.join(available) or 'none'}"
        )


def read_probe_data(shards: ShardSet, columns: Sequence[str], max_images: int | None) -> ProbeData:
    """Images and `columns` of the first `max_images` rows (all rows when None)."""
    limit = shards.num_rows if max_images is None else min(max_images, shards.num_rows)
    if limit < 1:
        raise ProbeInputError(f"{shards.uri} holds no rows to probe")
    images, tables, held = [], [], 0
    for batch in shards.iter_batches([IMAGE_COLUMN, *columns]):
        batch = batch.slice(0, limit - held)
        images.append(decode_images(batch.column(IMAGE_COLUMN), shards.image_shape))
        tables.append(pa.Table.from_batches([batch]).drop_columns([IMAGE_COLUMN]))
        held += batch.num_rows
        if held >= limit:
            break
    metadata = pa.concat_tables(tables).to_pandas()
    return ProbeData(shards.uri, np.concatenate(images), metadata)
