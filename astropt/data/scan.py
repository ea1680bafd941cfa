"""Checking one shard set: each file's footer, schema metadata, object ids and (deep) images.

How sets fit together (shared ids, differing layouts) and the command line are
`astropt.data.check`'s.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from astropt.data.schema import (
    ASTROPT_KEYS,
    ID_COLUMN,
    IMAGE_COLUMN,
    KEY_BANDS,
    KEY_DTYPE,
    KEY_SHAPE,
    KEY_VERSION,
    SCHEMA_VERSION,
    astropt_metadata,
    decode_images,
    list_parquet,
)
from astropt.storage import join, resolve

DEEP_BATCH_ROWS = 512


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a shard set: where (file, row or None) and what."""

    file: str
    row: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file} row {self.row}"
        return f"{where}: {self.message}"


@dataclass
class Layout:
    """The image layout a file declares."""

    shape: list[int]
    dtype: np.dtype
    bands: list[str]

    def differences(self, reference: Layout, where: str) -> list[str]:
        """How this layout's image shape and bands differ from those of `reference` (found in
        `where`), one message each."""
        return [
            f"{what} {mine} differs from {theirs} in {where}"
            for what, mine, theirs in (
                ("image shape", self.shape, reference.shape),
                ("bands", self.bands, reference.bands),
            )
            if mine != theirs
        ]


@dataclass
class SetScan:
    """What checking one shard set found."""

    uri: str
    expected_shape: Sequence[int] | None
    deep: bool
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    layout: Layout | None = None
    reference: str = ""  # the file `layout` came from
    ids: list[pa.Table] = field(default_factory=list)  # object_id, file (index), row

    def add(self, file: str, row: int | None, message: str) -> None:
        self.problems.append(Problem(file, row, message))

    def id_table(self) -> pa.Table:
        schema = pa.schema([(ID_COLUMN, pa.string()), ("file", pa.int32()), ("row", pa.int64())])
        return pa.concat_tables(self.ids) if self.ids else schema.empty_table()


def _layout(scan: SetScan, name: str, schema: pa.Schema) -> Layout | None:
    """The file's declared layout; missing or malformed astropt metadata is reported."""
    meta = astropt_metadata(schema)
    missing = [k for k in ASTROPT_KEYS if k not in meta]
    if missing:
        scan.add(name, None, f"schema metadata lacks {', '.join(missing)}")
    if KEY_VERSION in meta and meta[KEY_VERSION] != SCHEMA_VERSION:
        scan.add(name, None, f"schema version {meta[KEY_VERSION]!r}, expected {SCHEMA_VERSION!r}")
    try:
        shape = [int(s) for s in json.loads(meta[KEY_SHAPE])]
        dtype = np.dtype(meta.get(KEY_DTYPE, "uint8"))
        bands = list(json.loads(meta.get(KEY_BANDS, "null")) or [])
    except (KeyError, ValueError, TypeError) as error:
        if KEY_SHAPE in meta:
            scan.add(name, None, f"malformed schema metadata: {error}")
        return None
    if len(shape) != 3 or min(shape) < 1:
        scan.add(name, None, f"image shape {shape} is not (C, H, W)")
        return None
    if dtype != np.uint8:
        scan.add(name, None, f"image dtype is {dtype}, expected uint8")
    if bands and len(bands) != shape[0]:
        scan.add(name, None, f"{len(bands)} bands {bands} for {shape[0]} channels")
    return Layout(shape, dtype, bands)


def _check_columns(scan: SetScan, name: str, schema: pa.Schema, layout: Layout | None) -> bool:
    """Report missing or mistyped object_id / image columns; whether the image column is ok."""
    if ID_COLUMN not in schema.names:
        scan.add(name, None, f"no {ID_COLUMN!r} column")
    elif schema.field(ID_COLUMN).type not in (pa.string(), pa.large_string()):
        scan.add(name, None, f"{ID_COLUMN} has type {schema.field(ID_COLUMN).type}, not string")
    if IMAGE_COLUMN not in schema.names:
        scan.add(name, None, f"no {IMAGE_COLUMN!r} column")
        return False
    kind = schema.field(IMAGE_COLUMN).type
    if layout is None:
        return False
    width = int(np.prod(layout.shape)) * layout.dtype.itemsize
    if not pa.types.is_fixed_size_binary(kind) or kind.byte_width != width:
        expected = f"fixed_size_binary({width}) for {layout.dtype} {layout.shape}"
        scan.add(name, None, f"image column has type {kind}, expected {expected}")
        return False
    return True


def _compare_layout(
    scan: SetScan, name: str, layout: Layout, expected_shape: Sequence[int] | None
) -> None:
    """Report a shape other than expected, or a shape or bands other than the first file's."""
    if expected_shape is not None and layout.shape != list(expected_shape):
        scan.add(name, None, f"image shape {layout.shape}, expected {list(expected_shape)}")
    if scan.layout is None:
        scan.layout, scan.reference = layout, name
        return
    for message in layout.differences(scan.layout, scan.reference):
        scan.add(name, None, message)


def _read_ids(scan: SetScan, name: str, index: int, parquet: pq.ParquetFile) -> None:
    """Collect the object ids of a file; report null ids and unreadable id data."""
    try:
        ids = parquet.read(columns=[ID_COLUMN]).column(ID_COLUMN).cast(pa.string())
    except (OSError, pa.ArrowException) as error:
        scan.add(name, None, f"unreadable {ID_COLUMN} column: {error}")
        return
    rows = pa.array(np.arange(len(ids), dtype=np.int64))
    for row in pc.indices_nonzero(pc.is_null(ids)).to_pylist():
        scan.add(name, row, f"{ID_COLUMN} is null")
    files = pa.array(np.full(len(ids), index, dtype=np.int32))
    scan.ids.append(pa.table([ids, files, rows], names=[ID_COLUMN, "file", "row"]))


def _check_images(scan: SetScan, name: str, parquet: pq.ParquetFile, layout: Layout) -> None:
    """Stream the image column and report null, all-zero, constant and NaN images."""
    start = 0
    try:
        for batch in parquet.iter_batches(DEEP_BATCH_ROWS, columns=[IMAGE_COLUMN]):
            column = batch.column(0)
            flat = decode_images(column, layout.shape, layout.dtype).reshape(len(column), -1)
            for row, message in _image_findings(flat, column):
                scan.add(name, start + row, message)
            start += len(column)
    except (OSError, pa.ArrowException, ValueError) as error:
        scan.add(name, start, f"unreadable image data from this row on: {error}")


def _image_findings(flat: np.ndarray, column: pa.Array) -> list[tuple[int, str]]:
    """(row, message) for each bad image of a decoded batch (n, pixels)."""
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    found = [(int(r), "image is null") for r in np.flatnonzero(~valid)]
    if flat.dtype.kind == "f":
        for row in np.flatnonzero(np.isnan(flat).any(axis=1)):
            found.append((int(row), "image contains NaN"))
        for row in np.flatnonzero(np.isinf(flat).any(axis=1)):
            found.append((int(row), "image contains infinite values"))
    low, high = flat.min(axis=1), flat.max(axis=1)
    for row in np.flatnonzero((low == high) & valid):
        value = low[row]
        message = "image is all zeros" if value == 0 else f"image is constant ({value})"
        found.append((int(row), message))
    return sorted(found)


def _check_file(scan: SetScan, fs: pafs.FileSystem, path: str, name: str, index: int) -> None:
    """All checks of one file of a set."""
    try:
        handle = fs.open_input_file(path)
    except OSError as error:
        scan.add(name, None, f"unreadable file: {error}")
        return
    with handle:
        try:
            parquet = pq.ParquetFile(handle)
        except (OSError, pa.ArrowException) as error:
            scan.add(name, None, f"unreadable Parquet file (truncated or corrupt?): {error}")
            return
        schema = parquet.schema_arrow
        layout = _layout(scan, name, schema)
        image_ok = _check_columns(scan, name, schema, layout)
        if layout is not None:
            _compare_layout(scan, name, layout, scan.expected_shape)
        if ID_COLUMN in schema.names:
            _read_ids(scan, name, index, parquet)
        if scan.deep and image_ok and layout is not None:
            _check_images(scan, name, parquet, layout)


def scan_set(
    uri: str,
    expected_shape: Sequence[int] | None,
    deep: bool,
    filesystem: pafs.FileSystem | None,
) -> SetScan:
    """Every problem of one shard set on its own (ids shared with other sets are `check`'s)."""
    scan = SetScan(str(uri), expected_shape, deep)
    fs, path = resolve(uri, filesystem)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.NotFound:
        scan.add(scan.uri, None, "path does not exist")
        return scan
    if kind != pafs.FileType.Directory:
        scan.add(scan.uri, None, "is not a folder of Parquet files")
        return scan
    names = list_parquet(fs, path)
    if not names:
        scan.add(scan.uri, None, "no *.parquet files")
    for index, name in enumerate(names):
        scan.files.append(join(scan.uri, name))
        _check_file(scan, fs, join(path, name), scan.files[-1], index)
    _find_duplicates(scan)
    return scan


def _find_duplicates(scan: SetScan) -> None:
    """Report every repeat of an object id within a set, pointing at its first occurrence."""
    table = scan.id_table().filter(pc.is_valid(pc.field(ID_COLUMN)))
    counts = table.group_by(ID_COLUMN).aggregate([("row", "count")])
    repeated = counts.filter(pc.greater(counts["row_count"], 1)).column(ID_COLUMN)
    if not len(repeated):
        return
    rows = table.filter(pc.is_in(table[ID_COLUMN], value_set=repeated))
    rows = rows.sort_by([(ID_COLUMN, "ascending"), ("file", "ascending"), ("row", "ascending")])
    first: dict[str, tuple[int, int]] = {}
    for object_id, file, row in zip(*(rows[c].to_pylist() for c in rows.column_names), strict=True):
        if object_id in first:
            seen_file, seen_row = first[object_id]
            where = f"{scan.files[seen_file]} row {seen_row}"
            scan.add(
                scan.files[file], row, f"duplicate {ID_COLUMN} {object_id!r} (first at {where})"
            )
        else:
            first[object_id] = (file, row)
