"""What a conversion reads: input files (paths, folders, glob patterns, local or s3://),
images decoded to uint8 (3, S, S) in (g, r, z) band order, and tables of scalar metadata.

The RGB images of the Legacy Survey (and so of Smith42/galaxies) map the z, r and g bands to
red, green and blue; decoding stores the channels in wavelength order, channel 0 = blue = g,
1 = green = r, 2 = red = z, the layout the synthetic data uses. FITS cubes are read as (g, r, z)
fluxes in nanomaggies and stretched like the synthetic images (FITS needs astropy).
"""

from __future__ import annotations

import fnmatch
import io
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from PIL import Image, ImageOps, UnidentifiedImageError

from astropt.data.schema import scalar_type
from astropt.storage import resolve

BANDS = ("g", "r", "z")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz", ".fits.fz")
GLOB_CHARACTERS = "*?["

Source = tuple[pafs.FileSystem, str]


class ConversionError(RuntimeError):
    """Nothing could be converted, or the input is unusable."""


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


def undecodable(error: Exception) -> str:
    """A skip reason for an image that failed to decode."""
    if isinstance(error, UnidentifiedImageError):
        return "undecodable image: not a recognised image format"
    return f"undecodable image: {error}"


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
            found += [(fs, p) for p in walk(fs, path) if p.lower().endswith(tuple(suffixes))]
        elif info.type == pafs.FileType.File:
            found.append((fs, path))
        else:
            raise ConversionError(f"{spec} does not exist")
    return sorted(found, key=lambda source: source[1])


def walk(fs: pafs.FileSystem, root: str) -> list[str]:
    """All file paths under a folder, sorted."""
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def _glob(spec: str) -> list[Source]:
    """Files matching a glob pattern (`*` also crosses folders)."""
    first = min(spec.index(c) for c in GLOB_CHARACTERS if c in spec)
    base = spec[:first].rsplit("/", 1)[0] or "/"
    fs, root = resolve(base)
    pattern = root.rstrip("/") + spec[len(base.rstrip("/")) :]
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return []
    return [(fs, p) for p in walk(fs, root) if fnmatch.fnmatchcase(p, pattern)]


def scalar_fields(schema: pa.Schema, exclude: Sequence[str]) -> tuple[list[pa.Field], list[str]]:
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
    fields, _ = scalar_fields(table.schema, [join_on])
    key = table.column(join_on).cast(pa.string())
    columns = [table.column(f.name).cast(f.type) for f in fields]
    return pa.table([key, *columns], names=[join_on, *(f.name for f in fields)])
