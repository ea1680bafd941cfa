"""Synthetic galaxy sets on disk: made once, recorded by a manifest, never replaced.

A set's folder holds `train/`, `val/` and `synth_manifest.json`, the settings that made it. A
request for a folder that holds a set made with other settings is an error, never a silent
regeneration: probes, other cells and earlier runs keep seeing the data they saw. Sets without
an explicit folder live under `data/synthetic/`, named by what makes them
(`DataConfig.placed`), so two settings never share a folder.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath

import pyarrow.fs as pafs

from astropt.data.schema import is_validation
from astropt.data.synth import GENERATOR_VERSION, generate, object_id
from astropt.storage import join, resolve

MANIFEST = "synth_manifest.json"


class DataSetConflict(FileExistsError):
    """The folder holds something other than the synthetic set asked for."""


def settings(n: int, size: int, seed: int, bands: Sequence[str], val_fraction: float) -> dict:
    """What determines a synthetic data set's content (shard size does not)."""
    return {
        "generator": "astropt.data.synth",
        "version": GENERATOR_VERSION,
        "n": n,
        "size": size,
        "seed": seed,
        "bands": list(bands),
        "val_fraction": val_fraction,
    }


def expected_split(n: int, seed: int = 0, val_fraction: float = 0.1) -> dict[str, int]:
    """How many of `n` galaxies land in train and in val (known without rendering them)."""
    val = sum(is_validation(object_id(i), val_fraction, seed) for i in range(n))
    return {"train": n - val, "val": val}


def read_manifest(fs: pafs.FileSystem, root: str) -> dict | None:
    path = join(root, MANIFEST)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as handle:
        return json.loads(handle.read())


def _publish(fs: pafs.FileSystem, tmp: str, root: str) -> None:
    """Move a finished build into place on a local disk; copy it on object stores (S3 cannot
    move folders), the manifest last so that it marks the copy complete."""
    if fs.get_file_info(root).type != pafs.FileType.NotFound:  # a concurrent build of it won
        return
    if isinstance(fs, pafs.LocalFileSystem):
        fs.move(tmp, root)
    else:
        for name in ("train", "val"):
            pafs.copy_files(join(tmp, name), join(root, name), fs, fs)
        fs.copy_file(join(tmp, MANIFEST), join(root, MANIFEST))  # last: marks it complete


def _refuse_other(out: str, fs: pafs.FileSystem, root: str, wanted: dict) -> bool:
    """True if the set is there already; raise if the folder holds anything else."""
    existing = read_manifest(fs, root)
    if existing == wanted:
        return True
    if existing is not None:
        differ = {k: (existing.get(k), v) for k, v in wanted.items() if existing.get(k) != v}
        shown = ", ".join(f"{k}: {old} there, {new} asked" for k, (old, new) in differ.items())
        raise DataSetConflict(
            f"{out} holds a synthetic set made with other settings ({shown}); it is left as "
            "it is: give data.synthetic settings that match it, or another data.root"
        )
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.Directory and fs.get_file_info(pafs.FileSelector(root)):
        raise DataSetConflict(f"{out} exists and is not a synthetic data set (no {MANIFEST})")
    if info.type not in (pafs.FileType.NotFound, pafs.FileType.Directory):
        raise DataSetConflict(f"{out} exists and is not a directory")
    return False


def ensure_synthetic_dataset(
    out: str,
    n: int,
    size: int,
    seed: int = 0,
    bands: Sequence[str] = ("g", "r", "z"),
    val_fraction: float = 0.1,
    shard_size: int = 1024,
    filesystem: pafs.FileSystem | None = None,
    announce: Callable[[], None] | None = None,
) -> tuple[str, str]:
    """(train URI, val URI) of the synthetic set in `out`, generated only if the folder is
    empty or missing (calling `announce` first). A new set is built in a hidden sibling folder
    and moved into place when complete, so an interrupted run never leaves a partial set."""
    fs, root = resolve(out, filesystem)
    wanted = settings(n, size, seed, bands, val_fraction)
    base = str(out).rstrip("/")
    uris = (join(base, "train"), join(base, "val"))
    if _refuse_other(str(out), fs, root, wanted):
        return uris
    if announce is not None:
        announce()
    path = PurePosixPath(root)
    tmp = str(path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        generate(tmp, n, size, bands, val_fraction, seed, shard_size, fs)
        with fs.open_output_stream(join(tmp, MANIFEST)) as handle:
            handle.write(json.dumps(wanted, indent=2).encode())
        if fs.get_file_info(root).type == pafs.FileType.Directory:
            fs.delete_dir(root)  # empty (checked above)
        _publish(fs, tmp, root)
    finally:
        if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
            fs.delete_dir(tmp)
    return uris
