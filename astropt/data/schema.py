"""The shard format: galaxy images and their metadata as Parquet files.

A *shard set* is a directory (a local path or any URI pyarrow.fs understands, such as
``s3://bucket/data/train``) holding ``*.parquet`` files; files whose names start with ``.`` or
``_`` are ignored (temporary files of an interrupted write). Training and validation are two
separate shard sets, conventionally ``DATA/train/`` and ``DATA/val/``. Every file has:

``object_id``
    string, unique across the training and validation sets.
``image``
    ``fixed_size_binary(C*H*W)``: the bytes of a C-contiguous uint8 array of shape (C, H, W),
    bands first. Decode a column with :func:`decode_images`.
any number of scalar metadata columns
    float64, int64, bool or string (e.g. redshift, magnitudes, morphology labels).

and Arrow schema metadata:

================================  ===============================================
``astropt.image_shape``           JSON ``[C, H, W]``
``astropt.image_dtype``           ``"uint8"``
``astropt.bands``                 JSON list of band names, one per channel, ``["g", "r", "z"]``
``astropt.schema_version``        ``"1"``
================================  ===============================================

Files are written atomically (:func:`write_shard` writes a hidden temporary file, then moves it
into place), so a reader never sees a half-written shard. Which set an object belongs to is a
pure function of its id (:func:`is_validation`), so regenerating or re-converting a data set
never moves an object between training and validation.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from astropt.storage import absolute_uri, join, list_files, resolve

SCHEMA_VERSION = "1"
ID_COLUMN = "object_id"
IMAGE_COLUMN = "image"
KEY_SHAPE = "astropt.image_shape"
KEY_DTYPE = "astropt.image_dtype"
KEY_BANDS = "astropt.bands"
KEY_VERSION = "astropt.schema_version"
ASTROPT_KEYS = (KEY_SHAPE, KEY_DTYPE, KEY_BANDS, KEY_VERSION)
METADATA_TYPES = (pa.float64(), pa.int64(), pa.bool_(), pa.string())
ROW_GROUP_BYTES = 16 * 1024 * 1024
SPLITS = ("train", "val")

ImageShape = tuple[int, int, int]


def is_validation(object_id: str, val_fraction: float, seed: int = 0) -> bool:
    """Whether an object belongs to the validation set: a hash of (seed, id), not its position."""
    digest = hashlib.sha256(f"{seed}:{object_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < val_fraction * 2**64


def shard_schema(
    image_shape: Sequence[int],
    bands: Sequence[str],
    metadata_fields: Sequence[pa.Field] = (),
) -> pa.Schema:
    """The Arrow schema of a shard: object_id, image, then the metadata columns."""
    shape = [int(s) for s in image_shape]
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W), got {image_shape}")
    if len(bands) != shape[0]:
        raise ValueError(f"{len(bands)} band names for {shape[0]} channels")
    for field in metadata_fields:
        if field.type not in METADATA_TYPES:
            raise TypeError(f"metadata column {field.name!r} has type {field.type}, not scalar")
    fields = [
        pa.field(ID_COLUMN, pa.string(), nullable=False),
        pa.field(IMAGE_COLUMN, pa.binary(int(np.prod(shape))), nullable=False),
        *metadata_fields,
    ]
    metadata = {
        KEY_SHAPE: json.dumps(shape),
        KEY_DTYPE: "uint8",
        KEY_BANDS: json.dumps(list(bands)),
        KEY_VERSION: SCHEMA_VERSION,
    }
    return pa.schema(fields, metadata=metadata)


def encode_images(images: np.ndarray) -> pa.FixedSizeBinaryArray:
    """A uint8 (n, C, H, W) array as a fixed_size_binary(C*H*W) Arrow array (no per-row loop)."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (n, C, H, W), got {images.dtype} {images.shape}")
    flat = np.ascontiguousarray(images).reshape(-1)
    width = int(np.prod(images.shape[1:]))
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(images), [None, pa.py_buffer(flat)]
    )


def decode_images(
    column: pa.Array | pa.ChunkedArray | np.ndarray | Sequence[bytes],
    shape: Sequence[int],
    dtype: np.dtype | str = np.uint8,
) -> np.ndarray:
    """An image column as an (n, C, H, W) array.

    Zero-copy (a read-only view) for a single-chunk Arrow column and for numpy fixed-width bytes
    (``S`` dtype) or numeric arrays; multi-chunk columns and object arrays / lists of bytes are
    copied once. `dtype` is the element type recorded in ``astropt.image_dtype``.
    """
    item = np.dtype(dtype)
    width = int(np.prod(shape)) * item.itemsize
    if isinstance(column, pa.ChunkedArray):
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if isinstance(column, pa.Array):
        if not pa.types.is_fixed_size_binary(column.type) or column.type.byte_width != width:
            raise ValueError(f"image column of type {column.type}, expected binary({width})")
        data = np.frombuffer(column.buffers()[1], dtype=np.uint8)
        flat = data[column.offset * width : (column.offset + len(column)) * width]
    elif isinstance(column, np.ndarray) and column.dtype.kind in "SuifV":
        flat = np.ascontiguousarray(column).reshape(-1).view(np.uint8)
    else:
        flat = np.frombuffer(b"".join(column), dtype=np.uint8)
    if flat.size % width:
        raise ValueError(f"{flat.size} image bytes are not a multiple of {width}")
    return flat.view(item).reshape(-1, *(int(s) for s in shape))


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
    """Scalar metadata fields for columns of values: float64, int64, bool or string."""
    fields = []
    for name, values in metadata.items():
        arrow_type = pa.array(values).type
        if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
            arrow_type = pa.float64()
        elif pa.types.is_integer(arrow_type):
            arrow_type = pa.int64()
        elif pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
            arrow_type = pa.string()
        fields.append(pa.field(name, arrow_type))
    return fields


class ShardWriter:
    """Buffers rows and writes them as ``part-00000.parquet``, ``part-00001.parquet``, ...

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
    """Writes rows to ``OUT/train`` and ``OUT/val``, each row where :func:`is_validation` puts it.

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


def list_parquet(fs: pafs.FileSystem, path: str) -> list[str]:
    """Sorted names of the visible ``*.parquet`` files directly inside a directory."""
    return list_files(fs, path, ".parquet")


def astropt_metadata(schema: pa.Schema) -> dict[str, str]:
    """The ``astropt.*`` entries of a schema's metadata (missing keys are left out)."""
    raw = schema.metadata or {}
    return {k: raw[k.encode()].decode() for k in ASTROPT_KEYS if k.encode() in raw}


@dataclass(frozen=True)
class ShardFile:
    """One file of a shard set, as read from its footer."""

    name: str
    size: int
    num_rows: int
    schema: pa.Schema


class ShardSet:
    """A directory (or URI) of shard files, described from Parquet footers only.

    >>> shards = ShardSet("data/train")
    >>> shards.image_shape, shards.bands, shards.num_rows, shards.fingerprint()
    """

    def __init__(self, uri: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None):
        self.uri = os.fspath(uri)
        self.fs, self.path = resolve(uri, filesystem)
        info = self.fs.get_file_info(self.path)
        if info.type != pafs.FileType.Directory:
            raise FileNotFoundError(f"shard set {self.uri} is not a directory")
        self.names = list_parquet(self.fs, self.path)
        if not self.names:
            raise FileNotFoundError(f"shard set {self.uri} holds no *.parquet files")

    @property
    def paths(self) -> list[str]:
        """Full filesystem paths of the files, sorted by name."""
        return [join(self.path, n) for n in self.names]

    @property
    def uris(self) -> list[str]:
        """The files as URIs (or absolute local paths), sorted by name."""
        return [join(absolute_uri(self.uri), n) for n in self.names]

    @cached_property
    def files(self) -> list[ShardFile]:
        """Name, size, row count and schema of every file (footers only)."""
        described = []
        for name, path in zip(self.names, self.paths, strict=True):
            with self.fs.open_input_file(path) as handle:
                meta = pq.ParquetFile(handle).metadata
                described.append(
                    ShardFile(name, handle.size(), meta.num_rows, meta.schema.to_arrow_schema())
                )
        return described

    @property
    def schema(self) -> pa.Schema:
        """The first file's Arrow schema."""
        return self.files[0].schema

    @property
    def image_shape(self) -> ImageShape:
        """(C, H, W) of every image."""
        c, h, w = json.loads(self._required(KEY_SHAPE))
        return int(c), int(h), int(w)

    @property
    def bands(self) -> list[str]:
        """Band name of each channel."""
        return list(json.loads(self._required(KEY_BANDS)))

    @property
    def num_rows(self) -> int:
        """Rows in all files together."""
        return sum(f.num_rows for f in self.files)

    @property
    def metadata_columns(self) -> list[str]:
        """Names of the scalar metadata columns (everything but object_id and image)."""
        return [n for n in self.schema.names if n not in (ID_COLUMN, IMAGE_COLUMN)]

    def fingerprint(self) -> str:
        """Short sha256 over each file's name, size, row count and astropt schema metadata."""
        described = [[f.name, f.size, f.num_rows, astropt_metadata(f.schema)] for f in self.files]
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]

    def iter_batches(
        self, columns: Sequence[str] | None = None, batch_size: int = 1024
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of all files in order, reading only `columns`."""
        for path in self.paths:
            with self.fs.open_input_file(path) as handle:
                yield from pq.ParquetFile(handle).iter_batches(batch_size, columns=columns)

    def _required(self, key: str) -> str:
        value = astropt_metadata(self.schema).get(key)
        if value is None:
            raise ValueError(f"{join(self.uri, self.names[0])} lacks schema metadata {key}")
        return value
