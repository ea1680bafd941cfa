"""Convert real galaxy imagery into train/val shard sets (see :mod:`astropt.data.schema`).

Two sources:

``hf``
    Parquet files laid out like the Hugging Face data set ``Smith42/galaxies``: an image column
    of Hugging Face Image structs ``{bytes, path}`` (or plain binary) holding JPEG/PNG bytes, an
    id column (``dr8_id``) and any scalar columns, which are carried over as metadata. A
    separate metadata file (Parquet or CSV) can be joined on the id.
``folder``
    A folder tree of PNG/JPEG images; the object id is the path relative to the folder without
    its suffix (``sub/dir/name``). FITS files are read only when astropy is installed.

Every image is centre-cropped to a square and resized with a Lanczos filter to S x S, then
stored channels first as uint8 (3, S, S). The RGB images of the Legacy Survey (and so of
``Smith42/galaxies``) map the z, r and g bands to red, green and blue; the converter stores
the channels in wavelength order, so channel 0 = blue = g, 1 = green = r, 2 = red = z, and the
bands are recorded as ``["g", "r", "z"]``, the same layout the synthetic data uses. FITS cubes
are read as (g, r, z) fluxes in nanomaggies and stretched like the synthetic images.

Input is streamed (a batch of rows or files at a time); only the ids seen so far are kept, to
drop repeated ids. An image or file that does not decode is skipped; the report printed at the
end names each one. A run that writes nothing is an error. Rows go to ``OUT/train`` or
``OUT/val`` by a hash of their object id (the same rule as the synthetic data).

    python -m astropt.data.convert hf --input 'galaxies/data/*.parquet' --out data/real --size 64
    python -m astropt.data.convert folder --input cutouts/ --out data/cutouts --size 64
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from PIL import Image, ImageOps, UnidentifiedImageError

from astropt.data.schema import ID_COLUMN, IMAGE_COLUMN, SplitWriter, resolve, shard_schema

BANDS = ("g", "r", "z")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz", ".fits.fz")
GLOB_CHARACTERS = "*?["

Source = tuple[pafs.FileSystem, str]


class ConversionError(RuntimeError):
    """Nothing could be converted, or the input is unusable."""


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


def to_channels_first(image: Image.Image, size: int) -> np.ndarray:
    """An RGB image as uint8 (3, size, size) in (g, r, z) = (B, G, R) order: centre crop, resize."""
    image.draft("RGB", (size, size))  # JPEG: decode at the smallest scale still >= size
    square = ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.LANCZOS)
    return np.ascontiguousarray(np.asarray(square)[:, :, ::-1].transpose(2, 0, 1))


def decode_image(data: bytes, size: int) -> np.ndarray:
    """JPEG/PNG bytes as uint8 (3, size, size); raises on undecodable data."""
    with Image.open(io.BytesIO(data)) as image:
        return to_channels_first(image, size)


def decode_fits(data: bytes, size: int) -> np.ndarray:
    """A FITS (g, r, z) flux cube in nanomaggies as uint8 (3, size, size), asinh stretched."""
    from astropy.io import fits

    from astropt.data.synth import legacy_stretch

    with fits.open(io.BytesIO(data)) as hdus:
        cube = next((h.data for h in hdus if h.data is not None and h.data.ndim == 3), None)
        if cube is None or cube.shape[0] != len(BANDS):
            raise ValueError(f"expected a ({len(BANDS)}, H, W) image cube")
        planes = [
            ImageOps.fit(
                Image.fromarray(np.nan_to_num(plane).astype(np.float32), mode="F"),
                (size, size),
                Image.Resampling.LANCZOS,
            )
            for plane in cube
        ]
    return legacy_stretch(np.stack([np.asarray(p) for p in planes])[None], BANDS)[0]


def expand_inputs(specs: Sequence[str], suffixes: Sequence[str]) -> list[Source]:
    """Files named by paths, folders (searched recursively for `suffixes`) or glob patterns."""
    found: list[Source] = []
    for spec in specs:
        if any(c in spec for c in GLOB_CHARACTERS):
            found += _glob(spec)
            continue
        fs, path = resolve(spec)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            found += [(fs, p) for p in _walk(fs, path) if p.lower().endswith(tuple(suffixes))]
        elif info.type == pafs.FileType.File:
            found.append((fs, path))
        else:
            raise ConversionError(f"{spec} does not exist")
    return sorted(found, key=lambda source: source[1])


def _walk(fs: pafs.FileSystem, root: str) -> list[str]:
    """All file paths under a folder, sorted."""
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def _glob(spec: str) -> list[Source]:
    """Files matching a glob pattern (``*`` also crosses folders)."""
    first = min(spec.index(c) for c in GLOB_CHARACTERS if c in spec)
    base = spec[:first].rsplit("/", 1)[0] or "/"
    fs, root = resolve(base)
    pattern = root.rstrip("/") + spec[len(base.rstrip("/")) :]
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return []
    return [(fs, p) for p in _walk(fs, root) if fnmatch.fnmatchcase(p, pattern)]


def scalar_type(arrow_type: pa.DataType) -> pa.DataType | None:
    """The metadata type a column is stored as (float64, int64, bool, string), or None."""
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return pa.float64()
    if pa.types.is_integer(arrow_type):
        return pa.int64()
    if pa.types.is_boolean(arrow_type):
        return pa.bool_()
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pa.string()
    return None


def _scalar_fields(schema: pa.Schema, exclude: Sequence[str]) -> tuple[list[pa.Field], list[str]]:
    """Metadata fields for a schema's scalar columns, and the names of the others."""
    fields, others = [], []
    for column in schema:
        if column.name in exclude:
            continue
        kind = scalar_type(column.type)
        if kind is None:
            others.append(column.name)
        else:
            fields.append(pa.field(column.name, kind))
    return fields, others


def read_metadata_table(path: str, join_on: str) -> pa.Table:
    """A Parquet or CSV metadata file's scalar columns, the join key cast to string."""
    fs, location = resolve(path)
    if location.lower().endswith(".csv"):
        with fs.open_input_stream(location) as handle:
            table = pa_csv.read_csv(handle)
    else:
        table = pq.read_table(location, filesystem=fs)
    if join_on not in table.column_names:
        raise ConversionError(f"metadata file {path} has no column {join_on!r}")
    fields, _ = _scalar_fields(table.schema, [join_on])
    key = table.column(join_on).cast(pa.string())
    columns = [table.column(f.name).cast(f.type) for f in fields]
    return pa.table([key, *columns], names=[join_on, *(f.name for f in fields)])


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


def _undecodable(error: Exception) -> str:
    """A skip reason for an image that failed to decode."""
    if isinstance(error, UnidentifiedImageError):
        return "undecodable image: not a recognised image format"
    return f"undecodable image: {error}"


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
    """Convert Parquet files in the ``Smith42/galaxies`` layout; see the module docstring."""
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
        fields, others = _scalar_fields(schema, exclude)
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
            converter.skip(path, first + index, _undecodable(error))
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
    paths = _walk(fs, root)
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
        converter.skip(path, None, _undecodable(error))
        return None


def _relative_stem(root: str, path: str) -> str:
    """``sub/dir/name`` for ``root/sub/dir/name.png`` (or ``.fits.gz`` and the like)."""
    relative = str(PurePosixPath(path).relative_to(root.rstrip("/") or "/"))
    suffixes = sorted(IMAGE_SUFFIXES + FITS_SUFFIXES, key=len, reverse=True)
    suffix = next(s for s in suffixes if relative.lower().endswith(s))
    return relative[: -len(suffix)]


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``hf`` or ``folder`` conversion; prints the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="source", required=True)
    hf = commands.add_parser("hf", help="Parquet files laid out like Smith42/galaxies")
    hf.add_argument("--input", nargs="+", required=True, help="Parquet file(s), folder or glob")
    hf.add_argument("--id-column", default="dr8_id")
    hf.add_argument("--image-column", default="image")
    hf.add_argument("--metadata", help="Parquet or CSV file of extra columns to join")
    hf.add_argument("--join-on", help="key column of --metadata (default: the id column)")
    folder = commands.add_parser("folder", help="a folder tree of PNG/JPEG images")
    folder.add_argument("--input", required=True, help="the folder")
    for command in (hf, folder):
        command.add_argument("--out", required=True, help="output folder: OUT/train, OUT/val")
        command.add_argument("--size", type=int, required=True, help="output height and width")
        command.add_argument("--val-fraction", type=float, default=0.1)
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--shard-size", type=int, default=1024)
    args = parser.parse_args(argv)
    common = {
        "val_fraction": args.val_fraction,
        "seed": args.seed,
        "shard_size": args.shard_size,
    }
    try:
        if args.source == "hf":
            report = convert_hf(
                args.input,
                args.out,
                args.size,
                args.id_column,
                args.image_column,
                args.metadata,
                args.join_on,
                **common,
            )
        else:
            report = convert_folder(args.input, args.out, args.size, **common)
    except (ConversionError, FileExistsError) as error:
        raise SystemExit(f"error: {error}") from None
    print(report)


if __name__ == "__main__":
    main()
