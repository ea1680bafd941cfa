"""Metrics and tags that could not reach MLflow, kept in files and uploaded later.

    python -m astropt.spool upload RUNS/ray/<cell>/mlflow-spool --tracking-uri URI

A run's spool holds `<run id>.jsonl` (the worker's unsent points and tags, JSON lines) and
`<run id>.status.jsonl` (the driver's final status, when it could not write it). Uploading
skips points MLflow already holds, so running it twice, or after a partial upload, never
duplicates a step; sent files are renamed `*.uploaded`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence

from mlflow.entities import Metric

from astropt.record import MetricBuffer, logged_through, make_client, set_tags
from astropt.storage import exists, join, list_files, resolve

SUFFIX = ".jsonl"
STATUS_PART = ".status"


def spool_folder(run_dir: str) -> str:
    """Where a run's spool lives: beside its checkpoints."""
    return join(run_dir, "mlflow-spool")


def write_spool(
    folder: str,
    run_id: str,
    metrics: Sequence[Metric],
    tags: Mapping[str, object],
    part: str = "",
) -> str:
    """Write (replace) one spool file of `run_id`; returns its path."""
    fs, path = resolve(folder)
    fs.create_dir(path, recursive=True)
    target = join(path, f"{run_id}{part}{SUFFIX}")
    lines = [json.dumps({"tags": {k: str(v) for k, v in tags.items()}})]
    lines += [
        json.dumps({"key": m.key, "value": m.value, "step": m.step, "ts": m.timestamp})
        for m in metrics
    ]
    with fs.open_output_stream(target) as out:
        out.write(("\n".join(lines) + "\n").encode())
    return target


def upload(folder: str, tracking_uri: str) -> dict[str, int]:
    """Send every spool file under `folder`; returns points sent per run. The driver's status
    file goes last, so a run is marked finished only once its history is complete."""
    fs, path = resolve(folder)
    client = make_client(tracking_uri)
    sent: dict[str, int] = {}
    names = sorted(list_files(fs, path, SUFFIX), key=lambda n: (STATUS_PART in n, n))
    for name in names:
        run_id = name.removesuffix(SUFFIX).removesuffix(STATUS_PART)
        file = join(path, name)
        with fs.open_input_stream(file) as handle:
            records = [json.loads(line) for line in handle.read().decode().splitlines() if line]
        buffer = MetricBuffer(client, run_id, logged_through(client, run_id))
        for record in records[1:]:
            buffer.add_points(
                [Metric(record["key"], record["value"], record["ts"], record["step"])]
            )
        sent[run_id] = sent.get(run_id, 0) + len(buffer.pending)
        if not buffer.flush():
            raise ConnectionError(f"MLflow at {tracking_uri} refused the points of {file}")
        set_tags(client, run_id, records[0]["tags"])
        fs.move(file, file.removesuffix(SUFFIX) + ".uploaded")
    return sent


def main(argv: list[str] | None = None) -> int:
    """Upload and print the points sent per run; an unreachable store or a missing folder is
    `error: ...` on stderr and exit code 2."""
    parser = argparse.ArgumentParser(
        prog="python -m astropt.spool",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["upload"], help="send a spool's points and tags")
    parser.add_argument("spool", help="spool folder (local path or s3:// URI)")
    parser.add_argument("--tracking-uri", required=True, metavar="URI", help="the MLflow store")
    args = parser.parse_args(argv)
    if not exists(args.spool):
        print(f"error: spool folder {args.spool} does not exist", file=sys.stderr)
        return 2
    try:
        counts = upload(args.spool, args.tracking_uri)
    except (ConnectionError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for run_id, count in counts.items():
        print(f"run {run_id}: {count} points uploaded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
