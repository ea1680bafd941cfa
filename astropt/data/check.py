"""Find everything wrong with shard sets in one pass, before training starts.

Structural checks read only Parquet footers and the ``object_id`` column: a missing path, a
folder without ``*.parquet`` files, unreadable (e.g. truncated) files, missing ``object_id`` /
``image`` columns, missing or inconsistent ``astropt.*`` schema metadata, an image column of the
wrong type, size or dtype, image shapes that differ from the expected one or between files,
null and duplicate object ids, and a validation set sharing ids with a training set. Deep checks
also stream the image column batch by batch: all-zero or constant images, NaN / infinite values
in float images, null images.

Each problem names its file and, where it has one, its row::

    data/train/part-00003.parquet row 17: image is all zeros

Library: :func:`check_shard_set`, :func:`check_split` and :func:`require_valid_split` (which
raises :class:`ShardSetError`); they default to structural checks only. Command line (deep by
default; exit status 1 when there are problems)::

    python -m astropt.data.check data/train --val data/val --expect-shape 3,64,64
"""

from __future__ import annotations

import argparse
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
    join,
    list_parquet,
    resolve,
)

MAX_LISTED = 50  # problems spelled out in a ShardSetError message
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


class ShardSetError(Exception):
    """Shard sets that must not be trained on; `problems` lists every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        lines = [str(p) for p in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            lines.append(f"... and {len(self.problems) - MAX_LISTED} more")
        super().__init__(
            f"{len(self.problems)} problem(s) in the shard sets:\n  " + "\n  ".join(lines)
        )


@dataclass
class _Layout:
    """The image layout a file declares."""

    shape: list[int]
    dtype: np.dtype
    bands: list[str]


@dataclass
class _Scan:
    """What checking one shard set found."""

    uri: str
    expected_shape: Sequence[int] | None
    deep: bool
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    layout: _Layout | None = None
    reference: str = ""  # the file `layout` came from
    ids: list[pa.Table] = field(default_factory=list)  # object_id, file (index), row

    def add(self, file: str, row: int | None, message: str) -> None:
        self.problems.append(Problem(file, row, message))

    def id_table(self) -> pa.Table:
        schema = pa.schema([(ID_COLUMN, pa.string()), ("file", pa.int32()), ("row", pa.int64())])
        return pa.concat_tables(self.ids) if self.ids else schema.empty_table()


def _layout(scan: _Scan, name: str, schema: pa.Schema) -> _Layout | None:
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
    return _Layout(shape, dtype, bands)


def _check_columns(scan: _Scan, name: str, schema: pa.Schema, layout: _Layout | None) -> bool:
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
    scan: _Scan, name: str, layout: _Layout, expected_shape: Sequence[int] | None
) -> None:
    """Report a shape other than expected, or a shape or bands other than the first file's."""
    if expected_shape is not None and layout.shape != list(expected_shape):
        scan.add(name, None, f"image shape {layout.shape}, expected {list(expected_shape)}")
    if scan.layout is None:
        scan.layout, scan.reference = layout, name
        return
    for what, mine, theirs in (
        ("image shape", layout.shape, scan.layout.shape),
        ("bands", layout.bands, scan.layout.bands),
    ):
        if mine != theirs:
            scan.add(name, None, f"{what} {mine} differs from {theirs} in {scan.reference}")


def _read_ids(scan: _Scan, name: str, index: int, parquet: pq.ParquetFile) -> None:
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


def _check_images(scan: _Scan, name: str, parquet: pq.ParquetFile, layout: _Layout) -> None:
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


def _check_file(scan: _Scan, fs: pafs.FileSystem, path: str, name: str, index: int) -> None:
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


def _scan(
    uri: str,
    expected_shape: Sequence[int] | None,
    deep: bool,
    filesystem: pafs.FileSystem | None,
) -> _Scan:
    """Check one shard set."""
    scan = _Scan(str(uri), expected_shape, deep)
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


def _find_duplicates(scan: _Scan) -> None:
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


def _overlap(train: _Scan, val: _Scan) -> list[Problem]:
    """Validation rows whose object id is also in the training set."""
    train_ids, val_ids = train.id_table(), val.id_table()
    if not train_ids.num_rows or not val_ids.num_rows:
        return []  # (pyarrow's index_in crashes on an empty value set)
    position = pc.index_in(val_ids[ID_COLUMN], value_set=train_ids[ID_COLUMN])
    shared = pc.indices_nonzero(pc.is_valid(position))
    mine, theirs = val_ids.take(shared), train_ids.take(position.take(shared))
    problems = []
    for object_id, file, row, train_file, train_row in zip(
        mine[ID_COLUMN].to_pylist(),
        mine["file"].to_pylist(),
        mine["row"].to_pylist(),
        theirs["file"].to_pylist(),
        theirs["row"].to_pylist(),
        strict=True,
    ):
        where = f"{train.files[train_file]} row {train_row}"
        message = f"{ID_COLUMN} {object_id!r} is also in the training set ({where})"
        problems.append(Problem(val.files[file], row, message))
    return problems


def _layout_mismatch(first: _Scan, other: _Scan) -> list[Problem]:
    """A set whose image shape or bands differ from the first set's."""
    if first.layout is None or other.layout is None:
        return []
    problems = []
    for what, mine, theirs in (
        ("image shape", other.layout.shape, first.layout.shape),
        ("bands", other.layout.bands, first.layout.bands),
    ):
        if mine != theirs:
            problems.append(
                Problem(other.uri, None, f"{what} {mine} differs from {theirs} in {first.uri}")
            )
    return problems


def check_sets(
    uris: Sequence[str],
    val_uri: str | None = None,
    expected_shape: Sequence[int] | None = None,
    deep: bool = False,
    filesystem: pafs.FileSystem | None = None,
) -> list[Problem]:
    """Check training sets and an optional validation set, and how they fit together.

    Later sets must have the first set's image shape and bands, and the validation set must
    share no object id with any training set.
    """
    scans = [_scan(uri, expected_shape, deep, filesystem) for uri in uris]
    if val_uri is not None:
        scans.append(_scan(val_uri, expected_shape, deep, filesystem))
    problems = [p for scan in scans for p in scan.problems]
    for other in scans[1:]:
        problems += _layout_mismatch(scans[0], other)
    if val_uri is not None:
        for train in scans[:-1]:
            problems += _overlap(train, scans[-1])
    return problems


def check_shard_set(
    uri: str,
    expected_shape: Sequence[int] | None = None,
    deep: bool = False,
    filesystem: pafs.FileSystem | None = None,
) -> list[Problem]:
    """Every problem of one shard set (deep: also read every image)."""
    return check_sets([uri], None, expected_shape, deep, filesystem)


def check_split(
    train_uri: str,
    val_uri: str,
    expected_shape: Sequence[int] | None = None,
    deep: bool = False,
    filesystem: pafs.FileSystem | None = None,
) -> list[Problem]:
    """Every problem of a training and a validation set, including ids they share."""
    return check_sets([train_uri], val_uri, expected_shape, deep, filesystem)


def require_valid_split(
    train_uri: str,
    val_uri: str,
    expected_shape: Sequence[int] | None = None,
    deep: bool = False,
    filesystem: pafs.FileSystem | None = None,
) -> None:
    """Raise :class:`ShardSetError` listing every problem, if there are any."""
    problems = check_split(train_uri, val_uri, expected_shape, deep, filesystem)
    if problems:
        raise ShardSetError(problems)


def _shape(text: str) -> tuple[int, int, int]:
    """argparse type for ``C,H,W``."""
    parts = [int(p) for p in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("expected C,H,W")
    return parts[0], parts[1], parts[2]


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: print every problem; exit 1 if there are any."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="shard set folders or URIs")
    parser.add_argument("--val", help="a validation set: must not share ids with PATHs")
    parser.add_argument("--expect-shape", type=_shape, help="C,H,W every image must have")
    parser.add_argument(
        "--deep",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also read every image (default; --no-deep: footers and ids only)",
    )
    args = parser.parse_args(argv)
    problems = check_sets(args.paths, args.val, args.expect_shape, args.deep)
    for problem in problems:
        print(problem)
    sets = len(args.paths) + (args.val is not None)
    print(
        f"{len(problems)} problem(s) in {sets} shard set(s)"
        if problems
        else f"ok: {sets} shard set(s)"
    )
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
