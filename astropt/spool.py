"""Metrics and tags that could not reach MLflow, kept in files and uploaded later.

    python -m astropt.spool upload RUNS/ray/<cell>/mlflow-spool --tracking-uri URI

A spool file holds one run's unsent points (JSON lines). Uploading skips points MLflow already
holds, so running it twice, or after a partial upload, never duplicates a step.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping

import pyarrow.fs as pafs
from mlflow.entities import Metric

from astropt.data.schema import join, list_files, resolve
from astropt.tracking import MetricBuffer, logged_through, make_client, set_tags

SUFFIX = ".jsonl"


def write_spool(
    spool_uri: str, run_id: str, metrics: list[Metric], tags: Mapping[str, object]
) -> str:
    """Write (replace) the spool file of `run_id`; returns its path."""
    fs, folder = resolve(spool_uri)
    fs.create_dir(folder, recursive=True)
    path = join(folder, f"{run_id}{SUFFIX}")
    lines = [json.dumps({"tags": {k: str(v) for k, v in tags.items()}})]
    lines += [
        json.dumps({"key": m.key, "value": m.value, "step": m.step, "ts": m.timestamp})
        for m in metrics
    ]
    with fs.open_output_stream(path) as out:
        out.write(("\n".join(lines) + "\n").encode())
    return path


def copy_folder(local_dir: str, uri: str) -> str:
    """Copy a local folder's files to `uri` (local path or s3://); returns `uri`."""
    fs, folder = resolve(uri)
    fs.create_dir(folder, recursive=True)
    pafs.copy_files(local_dir, folder, destination_filesystem=fs)
    return uri


def upload(spool_uri: str, tracking_uri: str) -> dict[str, int]:
    """Send every spool file under `spool_uri`; returns points sent per run. Sent files are
    renamed to `*.uploaded` so they are kept but not sent again."""
    fs, folder = resolve(spool_uri)
    client = make_client(tracking_uri)
    sent = {}
    for name in list_files(fs, folder, SUFFIX):
        run_id = name.removesuffix(SUFFIX)
        path = join(folder, name)
        with fs.open_input_stream(path) as handle:
            records = [json.loads(line) for line in handle.read().decode().splitlines() if line]
        buffer = MetricBuffer(client, run_id, logged_through(client, run_id))
        for record in records[1:]:
            buffer.add(record["step"], {record["key"]: record["value"]})
        sent[run_id] = len(buffer.pending)
        if not buffer.flush():
            raise ConnectionError(f"MLflow at {tracking_uri} refused the points of {path}")
        set_tags(client, run_id, records[0]["tags"])
        fs.move(path, path.removesuffix(SUFFIX) + ".uploaded")
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m astropt.spool",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["upload"])
    parser.add_argument("spool", help="spool folder (local path or s3:// URI)")
    parser.add_argument("--tracking-uri", required=True)
    args = parser.parse_args(argv)
    for run_id, count in upload(args.spool, args.tracking_uri).items():
        print(f"run {run_id}: {count} points uploaded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
