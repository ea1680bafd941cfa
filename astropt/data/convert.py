"""Convert real galaxy imagery into train/val shard sets (the format of astropt.data.schema).

Two sources:

hf
    Parquet files laid out like the Hugging Face data set Smith42/galaxies: an image column of
    Hugging Face Image structs {bytes, path} (or plain binary) holding JPEG/PNG bytes, an id
    column (dr8_id) and any scalar columns, which are carried over as metadata. A separate
    metadata file (Parquet or CSV) can be joined on the id.
folder
    A folder tree of PNG/JPEG images; the object id is the path relative to the folder without
    its suffix (sub/dir/name). FITS files are read only when astropy is installed.

Every image is centre-cropped to a square and resized with a Lanczos filter to S x S, then
stored channels first as uint8 (3, S, S) with bands ["g", "r", "z"] (`astropt.data.inputs`
says how). Input is streamed (a batch of rows or files at a time); only the ids seen so far are
kept, to drop repeated ids. An image or file that does not decode is skipped; the report printed
at the end names each one. A run that writes nothing is an error. Rows go to OUT/train or
OUT/val by a hash of their object id (the same rule as the synthetic data).

    python -m astropt.data.convert hf --input 'galaxies/data/*.parquet' --out data/real --size 64
    python -m astropt.data.convert folder --input cutouts/ --out data/cutouts --size 64
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from astropt.data.inputs import (
    BANDS,
    FITS_SUFFIXES,
    IMAGE_SUFFIXES,
    ConversionError,
    Source,
    decode_fits,
    decode_image,
    expand_inputs,
    read_metadata_table,
    scalar_fields,
    undecodable,
    walk,
)
from astropt.data.schema import ID_COLUMN, IMAGE_COLUMN, shard_schema
from astropt.data.writers import SplitWriter
from astropt.storage import resolve


@dataclass(frozen=True)
class Skipped:
    """An input file or row that was left out, and why."""

    source: str
    row: int | None
    reason: str

    def __str__(self) -> str:
        where = self.source if self.row is None else f"{self.source} row {self.row}"
        return f"{where}: {self.reason}"


@dataclass
class ConversionReport:
    """What a conversion wrote and what it left out."""

    written: dict[str, int] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        counts = ", ".join(f"{n} {name}" for name, n in self.written.items())
        lines = [f"converted {sum(self.written.values())} images ({counts or 'none'})"]
        lines += [f"note: {note}" for note in self.notes]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}:")
            lines += [f"  {item}" for item in self.skipped]
        return "\n".join(lines)


class _Converter:
    """Shared state of one conversion: the writer, the report and the ids seen so far."""

    def __init__(self, writer: SplitWriter, report: ConversionReport) -> None:
        self.writer, self.report = writer, report
        self.seen: set[str] = set()

    def skip(self, source: str, row: int | None, reason: str) -> None:
        self.report.skipped.append(Skipped(source, row, reason))

    def accept(self, object_id: str | None, source: str, row: int | None) -> bool:
        """Whether an id is usable: present and not seen before (else the row is skipped)."""
        if object_id is None or object_id == "":
            self.skip(source, row, "missing object id")
        elif object_id in self.seen:
            self.skip(source, row, f"duplicate object id {object_id!r}")
        else:
            self.seen.add(object_id)
            return True
        return False

    def finish(self) -> ConversionReport:
        self.report.written = self.writer.close()
        if not sum(self.report.written.values()):
            raise ConversionError(f"nothing was converted\n{self.report}")
        return self.report


def _image_bytes(column: pa.Array) -> pa.Array:
    """The bytes of a Hugging Face Image struct column (or a plain binary column)."""
    if pa.types.is_struct(column.type):
        return pc.struct_field(column, "bytes")
    return column


def _hf_batches(
    sources: Sequence[Source], columns: list[str], batch_size: int, converter: _Converter
) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    """(file name, first row, batch) of every readable file that has the id and image columns
    (`columns[:2]`); other files, and the rest of a file that breaks off, are skipped."""
    for fs, path in sources:
        row = 0
        try:
            with fs.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle)
                names = parquet.schema_arrow.names
                missing = [c for c in columns[:2] if c not in names]
                if missing:
                    converter.skip(path, None, f"no column {', '.join(map(repr, missing))}")
                    continue
                present = [c for c in columns if c in names]
                for batch in parquet.iter_batches(batch_size, columns=present):
                    yield path, row, batch
                    row += batch.num_rows
        except (OSError, pa.ArrowException) as error:
            where = f"from row {row} on" if row else "file"
            converter.skip(path, None, f"unreadable Parquet data ({where}): {error}")


def convert_hf(
    inputs: Sequence[str],
    out: str,
    size: int,
    id_column: str = "dr8_id",
    image_column: str = "image",
    metadata: str | None = None,
    join_on: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    shard_size: int = 1024,
    batch_size: int = 256,
) -> ConversionReport:
    """Convert Parquet files in the Smith42/galaxies layout; see the module docstring."""
    sources = expand_inputs(inputs, (".parquet",))
    if not sources:
        raise ConversionError(f"no Parquet files in {', '.join(inputs)}")
    report = ConversionReport()
    reserved = [id_column, image_column, ID_COLUMN, IMAGE_COLUMN]
    fields = _input_fields(sources, reserved, report)
    extra = read_metadata_table(metadata, join_on or id_column) if metadata else None
    if extra is not None:
        taken = {f.name for f in fields} | set(reserved)
        fields += [extra.schema.field(n) for n in extra.column_names[1:] if n not in taken]
    schema = shard_schema((len(BANDS), size, size), BANDS, fields)
    converter = _Converter(SplitWriter(out, schema, val_fraction, seed, shard_size), report)
    columns = [id_column, image_column, *(f.name for f in fields)]
    for path, first, batch in _hf_batches(sources, columns, batch_size, converter):
        ids, images, rows = _decode_batch(
            batch, id_column, image_column, size, path, first, converter
        )
        if ids:
            values = _batch_metadata(batch, rows, fields, ids, extra)
            converter.writer.add(ids, np.stack(images), values)
    return converter.finish()


def _input_fields(
    sources: Sequence[Source], exclude: list[str], report: ConversionReport
) -> list[pa.Field]:
    """Metadata fields from the first readable input file's schema (footer only)."""
    for fs, path in sources:
        try:
            with fs.open_input_file(path) as handle:
                schema = pq.ParquetFile(handle).schema_arrow
        except (OSError, pa.ArrowException):
            continue
        fields, others = scalar_fields(schema, exclude)
        if others:
            report.notes.append(f"columns not carried over (not scalar): {', '.join(others)}")
        return fields
    return []


def _decode_batch(
    batch: pa.RecordBatch,
    id_column: str,
    image_column: str,
    size: int,
    path: str,
    first: int,
    converter: _Converter,
) -> tuple[list[str], list[np.ndarray], list[int]]:
    """Ids, decoded images and batch row numbers of the rows that decode."""
    ids = batch.column(id_column).cast(pa.string()).to_pylist()
    blobs = _image_bytes(batch.column(image_column))
    kept_ids, images, rows = [], [], []
    for index, (object_id, blob) in enumerate(zip(ids, blobs, strict=True)):
        data = blob.as_py()
        if data is None:
            converter.skip(path, first + index, "no image bytes")
            continue
        try:
            image = decode_image(data, size)
        except Exception as error:  # any decoder failure skips just this row
            converter.skip(path, first + index, undecodable(error))
            continue
        if converter.accept(object_id, path, first + index):
            kept_ids.append(object_id)
            images.append(image)
            rows.append(index)
    return kept_ids, images, rows


def _batch_metadata(
    batch: pa.RecordBatch,
    rows: list[int],
    fields: Sequence[pa.Field],
    ids: list[str],
    extra: pa.Table | None,
) -> dict[str, pa.Array]:
    """Metadata columns of the kept rows: from the batch, else joined from `extra` by id."""
    indices = pa.array(rows, type=pa.int64())
    values: dict[str, pa.Array] = {}
    matches = None
    if extra is not None:
        matches = pc.index_in(pa.array(ids, type=pa.string()), value_set=extra.column(0))
    for f in fields:
        if f.name in batch.schema.names:
            values[f.name] = batch.column(f.name).take(indices).cast(f.type)
        elif matches is not None and f.name in extra.column_names:
            values[f.name] = extra.column(f.name).take(matches).combine_chunks()
    return values


def convert_folder(
    input_dir: str,
    out: str,
    size: int,
    val_fraction: float = 0.1,
    seed: int = 0,
    shard_size: int = 1024,
    batch_size: int = 256,
) -> ConversionReport:
    """Convert a folder tree of PNG/JPEG (and, with astropy, FITS) images."""
    fs, root = resolve(input_dir)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise ConversionError(f"{input_dir} is not a folder")
    report = ConversionReport()
    paths = walk(fs, root)
    image_paths = [p for p in paths if p.lower().endswith(IMAGE_SUFFIXES)]
    fits_paths = [p for p in paths if p.lower().endswith(FITS_SUFFIXES)]
    if len(paths) > len(image_paths) + len(fits_paths):
        others = len(paths) - len(image_paths) - len(fits_paths)
        report.notes.append(f"{others} files ignored: not PNG, JPEG or FITS")
    if fits_paths and importlib.util.find_spec("astropy") is None:
        report.notes.append(
            f"{len(fits_paths)} FITS files ignored: astropy is not installed "
            f"(first: {fits_paths[0]})"
        )
        fits_paths = []
    schema = shard_schema((len(BANDS), size, size), BANDS)
    converter = _Converter(SplitWriter(out, schema, val_fraction, seed, shard_size), report)
    ids: list[str] = []
    images: list[np.ndarray] = []
    for path in sorted(image_paths + fits_paths):
        image = _read_image_file(fs, path, size, converter)
        object_id = _relative_stem(root, path)
        if image is not None and converter.accept(object_id, path, None):
            ids.append(object_id)
            images.append(image)
        if len(ids) == batch_size:
            converter.writer.add(ids, np.stack(images))
            ids, images = [], []
    if ids:
        converter.writer.add(ids, np.stack(images))
    return converter.finish()


def _read_image_file(
    fs: pafs.FileSystem, path: str, size: int, converter: _Converter
) -> np.ndarray | None:
    """One image file as uint8 (3, size, size), or None (and a skip entry) if it fails."""
    decode = decode_fits if path.lower().endswith(FITS_SUFFIXES) else decode_image
    try:
        with fs.open_input_file(path) as handle:
            return decode(handle.read(), size)
    except Exception as error:  # any read or decode failure skips just this file
        converter.skip(path, None, undecodable(error))
        return None


def _relative_stem(root: str, path: str) -> str:
    """`sub/dir/name` for `root/sub/dir/name.png` (or `.fits.gz` and the like)."""
    relative = str(PurePosixPath(path).relative_to(root.rstrip("/") or "/"))
    suffixes = sorted(IMAGE_SUFFIXES + FITS_SUFFIXES, key=len, reverse=True)
    suffix = next(s for s in suffixes if relative.lower().endswith(s))
    return relative[: -len(suffix)]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m astropt.data.convert",
        description="Convert real galaxy imagery into train/val shard sets: Parquet files laid "
        "out like Smith42/galaxies (hf) or a folder tree of PNG/JPEG/FITS images (folder).",
    )
    commands = parser.add_subparsers(dest="source", required=True, metavar="{hf,folder}")
    hf = commands.add_parser("hf", help="Parquet files laid out like Smith42/galaxies")
    hf.add_argument(
        "--input", nargs="+", required=True, metavar="PATH", help="Parquet files, folders or globs"
    )
    hf.add_argument("--id-column", default="dr8_id", metavar="NAME", help="object ids (dr8_id)")
    hf.add_argument("--image-column", default="image", metavar="NAME", help="images (image)")
    hf.add_argument("--metadata", metavar="PATH", help="Parquet or CSV file of columns to join")
    hf.add_argument("--join-on", metavar="NAME", help="key column of --metadata (the id column)")
    folder = commands.add_parser("folder", help="a folder tree of PNG/JPEG (and FITS) images")
    folder.add_argument("--input", required=True, metavar="PATH", help="the folder")
    for command in (hf, folder):
        command.add_argument(
            "--out", required=True, metavar="DIR", help="writes DIR/train, DIR/val"
        )
        command.add_argument("--size", type=int, required=True, help="output height and width")
        command.add_argument(
            "--val-fraction", type=float, default=0.1, metavar="F", help="share of ids in val (0.1)"
        )
        command.add_argument("--seed", type=int, default=0, help="seed of the id hash (0)")
        command.add_argument(
            "--shard-size", type=int, default=1024, metavar="ROWS", help="rows per file (1024)"
        )
    return parser


def _convert(args: argparse.Namespace) -> ConversionReport:
    common = {"val_fraction": args.val_fraction, "seed": args.seed, "shard_size": args.shard_size}
    if args.source == "folder":
        return convert_folder(args.input, args.out, args.size, **common)
    return convert_hf(
        args.input,
        args.out,
        args.size,
        args.id_column,
        args.image_column,
        args.metadata,
        args.join_on,
        **common,
    )


def main(argv: list[str] | None = None) -> int:
    """Convert and print the report; bad input is `error: ...` on stderr and exit code 2."""
    args = _parser().parse_args(argv)
    try:
        report = _convert(args)
    except (ConversionError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
