"""The shard format: galaxy images and their metadata as Parquet files.

A *shard set* is a directory (a local path or any URI pyarrow.fs understands, such as
``s3://bucket/data/train``) holding ``*.parquet`` files; files whose names start with ``.`` or
``_`` are ignored (temporary files of an interrupted write). Training and validation are two
separate shard sets, conventionally ``DATA/train/`` and ``DATA/val/``. Every file has:

``object_id``
    string, unique across the training and validation sets.
``image``
    ``fixed_size_binary(C*H*W)``: the bytes of a C-contiguous uint8 array of shape (C, H, W),
    bands first. Decode a column with `decode_images`.
any number of scalar metadata columns
    float64, int64, bool or string (e.g. redshift, magnitudes, morphology labels).

and Arrow schema metadata:

================================  ===============================================
``astropt.image_shape``           JSON ``[C, H, W]``
``astropt.image_dtype``           ``"uint8"``
``astropt.bands``                 JSON list of band names, one per channel, ``["g", "r", "z"]``
``astropt.schema_version``        ``"1"``
================================  ===============================================

Writing shards (atomically, so a reader never sees a half-written file) is
`astropt.data.writers`' job. Which set an object belongs to is a pure function of its id
(`is_validation`), so regenerating or re-converting a data set never moves an object between
training and validation.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

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


def scalar_type(arrow_type: pa.DataType) -> pa.DataType | None:
    """The metadata type a column of `arrow_type` is stored as (float64, int64, bool or
    string), or None for a type that is not a scalar."""
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return pa.float64()
    if pa.types.is_integer(arrow_type):
        return pa.int64()
    if pa.types.is_boolean(arrow_type):
        return pa.bool_()
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pa.string()
    return None


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
