"""Writing shards: one file atomically (a hidden temporary file, then a move, so a reader never
sees a half-written shard), a set cut into equal files, or rows split into train/ and val/ by a
hash of their ids. The format itself is `astropt.data.schema`'s.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from astropt.data.schema import (
    ID_COLUMN,
    IMAGE_COLUMN,
    KEY_SHAPE,
    encode_images,
    is_validation,
    scalar_type,
    shard_schema,
)
from astropt.storage import join, resolve

ROW_GROUP_BYTES = 16 * 1024 * 1024
SPLITS = ("train", "val")


def _metadata_arrays(
    fields: Sequence[pa.Field], metadata: Mapping[str, Any] | None, n: int
) -> list[pa.Array]:
    """Metadata values cast to their schema types; a column left out is all nulls."""
    metadata = metadata or {}
    unknown = set(metadata) - {f.name for f in fields}
    if unknown:
        raise KeyError(f"metadata columns not in the schema: {sorted(unknown)}")
    arrays = []
    for field in fields:
        values = metadata.get(field.name)
        array = pa.nulls(n, field.type) if values is None else pa.array(values).cast(field.type)
        if len(array) != n:
            raise ValueError(f"metadata column {field.name!r} has {len(array)} rows, not {n}")
        arrays.append(array)
    return arrays


def shard_table(
    schema: pa.Schema,
    object_ids: Sequence[str] | np.ndarray | pa.Array,
    images: np.ndarray,
    metadata: Mapping[str, Any] | None = None,
) -> pa.Table:
    """One shard's rows as a table with exactly `schema`."""
    shape = json.loads(schema.metadata[KEY_SHAPE.encode()])
    if list(images.shape[1:]) != shape or len(images) != len(object_ids):
        raise ValueError(f"{len(object_ids)} ids and images {images.shape} for shape {shape}")
    ids = pa.array(object_ids, type=pa.string())
    extra = _metadata_arrays(list(schema)[2:], metadata, len(images))
    return pa.Table.from_arrays([ids, encode_images(images), *extra], schema=schema)


def write_table(
    uri: str | os.PathLike[str], table: pa.Table, filesystem: pafs.FileSystem | None = None
) -> None:
    """Write a table as one Parquet file, atomically: a hidden temporary file, then a move."""
    fs, path = resolve(uri, filesystem)
    parent = str(PurePosixPath(path).parent)
    fs.create_dir(parent, recursive=True)
    tmp = join(parent, f".{PurePosixPath(path).name}.{uuid.uuid4().hex[:12]}.tmp")
    width = max(table.schema.field(IMAGE_COLUMN).type.byte_width, 1)
    try:
        pq.write_table(
            table,
            tmp,
            filesystem=fs,
            row_group_size=max(1, ROW_GROUP_BYTES // width),
            compression="zstd",
            compression_level=1,  # noisy images barely compress: keep it cheap
            use_dictionary=[c for c in table.column_names if c not in (ID_COLUMN, IMAGE_COLUMN)],
            write_statistics=[c for c in table.column_names if c != IMAGE_COLUMN],
        )
        fs.move(tmp, path)
    except BaseException:
        if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
            fs.delete_file(tmp)
        raise


def write_shard(
    uri: str | os.PathLike[str],
    object_ids: Sequence[str] | np.ndarray | pa.Array,
    images: np.ndarray,
    bands: Sequence[str],
    metadata: Mapping[str, Any] | None = None,
    metadata_fields: Sequence[pa.Field] | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> None:
    """Write one shard file (atomically) from ids, a uint8 (n, C, H, W) array and metadata.

    Metadata columns get the types in `metadata_fields`, or are inferred from the values
    (floats become float64, integers int64).
    """
    if metadata_fields is None:
        metadata_fields = infer_fields(metadata or {})
    schema = shard_schema(images.shape[1:], bands, metadata_fields)
    write_table(uri, shard_table(schema, object_ids, images, metadata), filesystem)


def infer_fields(metadata: Mapping[str, Any]) -> list[pa.Field]:
    """Metadata fields for columns of values: float64, int64, bool or string (another type is
    kept, for `shard_schema` to refuse)."""
    fields = []
    for name, values in metadata.items():
        arrow_type = pa.array(values).type
        fields.append(pa.field(name, scalar_type(arrow_type) or arrow_type))
    return fields


class ShardWriter:
    """Buffers rows and writes them as `part-00000.parquet`, `part-00001.parquet`, ...

    Every file but the last holds exactly `shard_size` rows, so the files' contents depend only
    on the order rows are added in.
    """

    def __init__(
        self,
        uri: str,
        schema: pa.Schema,
        shard_size: int = 1024,
        filesystem: pafs.FileSystem | None = None,
    ) -> None:
        if shard_size < 1:
            raise ValueError("shard_size must be at least 1")
        self.fs, self.path = resolve(uri, filesystem)
        self.schema = schema
        self.shard_size = shard_size
        self.files: list[str] = []
        self.num_rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def add(
        self,
        object_ids: Sequence[str] | np.ndarray | pa.Array,
        images: np.ndarray,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue rows; full shards are written as soon as they are complete."""
        if len(images) == 0:
            return
        self._pending.append(shard_table(self.schema, object_ids, images, metadata))
        self._pending_rows += len(images)
        self.num_rows += len(images)
        while self._pending_rows >= self.shard_size:
            self._flush(self.shard_size)

    def close(self) -> list[str]:
        """Write the last, partial shard; the names of all files written."""
        if self._pending_rows:
            self._flush(self._pending_rows)
        return self.files

    def _flush(self, rows: int) -> None:
        table = pa.concat_tables(self._pending)
        name = f"part-{len(self.files):05d}.parquet"
        write_table(join(self.path, name), table.slice(0, rows), self.fs)
        self.files.append(name)
        rest = table.slice(rows)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()


def _select(values: Any, mask: np.ndarray) -> Any:
    """The rows of a numpy-like or Arrow column where `mask` is true."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values.filter(pa.array(mask))
    return np.asarray(values)[mask]


class SplitWriter:
    """Writes rows to `OUT/train` and `OUT/val`, each row where `is_validation` puts it.

    Refuses to write into existing ``train``/``val`` folders, so two runs never mix.
    """

    def __init__(
        self,
        out: str,
        schema: pa.Schema,
        val_fraction: float,
        seed: int = 0,
        shard_size: int = 1024,
        filesystem: pafs.FileSystem | None = None,
    ) -> None:
        fs, root = resolve(out, filesystem)
        for name in SPLITS:
            if fs.get_file_info(join(root, name)).type != pafs.FileType.NotFound:
                raise FileExistsError(f"{join(os.fspath(out), name)} already exists")
        self.val_fraction, self.seed = val_fraction, seed
        self.writers = {
            name: ShardWriter(join(root, name), schema, shard_size, fs) for name in SPLITS
        }

    def add(
        self,
        object_ids: Sequence[str],
        images: np.ndarray,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue rows; each goes to the set its id hashes to."""
        ids = np.asarray(object_ids, dtype=object)
        val = np.fromiter(
            (is_validation(i, self.val_fraction, self.seed) for i in ids), bool, len(ids)
        )
        for name, mask in zip(SPLITS, (~val, val), strict=True):
            if mask.any():
                columns = {k: _select(v, mask) for k, v in (metadata or {}).items()}
                self.writers[name].add(list(ids[mask]), images[mask], columns)

    def close(self) -> dict[str, int]:
        """Write the last shards (an empty set still gets its folder); rows written per set."""
        for writer in self.writers.values():
            writer.fs.create_dir(writer.path, recursive=True)
            writer.close()
        return {name: writer.num_rows for name, writer in self.writers.items()}
