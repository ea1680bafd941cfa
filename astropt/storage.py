"""Paths in local folders and object stores (s3://, gs://, ...) alike, through pyarrow.fs.

Every module that reads or writes run storage, shard sets or spools builds its paths here.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pyarrow.fs as pafs


def resolve(
    uri: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None
) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a URI or local path; with `filesystem` the path is used as is."""
    text = os.fspath(uri)
    if filesystem is not None:
        return filesystem, text
    if "://" in text:
        return pafs.FileSystem.from_uri(text)
    return pafs.LocalFileSystem(), os.path.abspath(text)


def absolute_uri(uri: str) -> str:
    """A URI (s3://...) as is, a local path made absolute: workers run in other directories."""
    return uri if "://" in uri else str(Path(uri).resolve())


def join(base: str, *names: str) -> str:
    """`base/name/...` for filesystem paths and URIs alike."""
    return "/".join([base.rstrip("/"), *names])


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def touch(uri: str, text: str = "") -> None:
    """Write a small file (a marker), creating its folder."""
    fs, path = resolve(uri)
    fs.create_dir(str(PurePosixPath(path).parent), recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(text.encode())


def read_text(uri: str) -> str | None:
    """The file's text, or None if it does not exist."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as handle:
        return handle.read().decode()


def remove(uri: str) -> None:
    """Delete a file or a folder with its contents; nothing to delete is fine."""
    fs, path = resolve(uri)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif kind == pafs.FileType.File:
        fs.delete_file(path)


def list_files(fs: pafs.FileSystem, path: str, suffix: str) -> list[str]:
    """Sorted names of the visible files ending in `suffix` directly inside a directory."""
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=False))
    names = (PurePosixPath(i.path).name for i in infos if i.type == pafs.FileType.File)
    return sorted(n for n in names if n.endswith(suffix) and not n.startswith((".", "_")))


def list_folders(uri: str, prefix: str = "") -> list[str]:
    """Sorted names of the folders directly inside `uri` that start with `prefix` (none if the
    folder does not exist)."""
    fs, path = resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    names = (PurePosixPath(i.path).name for i in infos if i.type == pafs.FileType.Directory)
    return sorted(n for n in names if n.startswith(prefix))


def copy_folder(source: str, target: str) -> str:
    """Copy a folder's files (local path or URI) to `target`; returns `target`."""
    source_fs, source_path = resolve(source)
    target_fs, target_path = resolve(target)
    target_fs.create_dir(target_path, recursive=True)
    pafs.copy_files(
        source_path, target_path, source_filesystem=source_fs, destination_filesystem=target_fs
    )
    return target
