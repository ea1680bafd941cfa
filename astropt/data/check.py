"""Find everything wrong with shard sets in one pass, before training starts.

Structural checks read only Parquet footers and the `object_id` column: a missing path, a
folder without *.parquet files, unreadable (e.g. truncated) files, missing `object_id` /
`image` columns, missing or inconsistent `astropt.*` schema metadata, an image column of the
wrong type, size or dtype, image shapes that differ from the expected one or between files,
null and duplicate object ids, and a validation set sharing ids with a training set. Deep checks
also stream the image column batch by batch: all-zero or constant images, NaN / infinite values
in float images, null images.

Each problem names its file and, where it has one, its row:

    data/train/part-00003.parquet row 17: image is all zeros

Library: `check_shard_set`, `check_split` and `require_valid_split` (which raises
`ShardSetError`); they default to structural checks only. The command line reads every image
by default and exits with status 1 when it finds problems, 2 on bad arguments:

    python -m astropt.data.check data/train --val data/val --expect-shape 3,64,64
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pyarrow.compute as pc
import pyarrow.fs as pafs

from astropt.data.scan import Problem, SetScan, scan_set
from astropt.data.schema import ID_COLUMN

MAX_LISTED = 50  # problems spelled out in a ShardSetError message


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


def _overlap(train: SetScan, val: SetScan) -> list[Problem]:
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


def _layout_mismatch(first: SetScan, other: SetScan) -> list[Problem]:
    """A set whose image shape or bands differ from the first set's."""
    if first.layout is None or other.layout is None:
        return []
    return [Problem(other.uri, None, m) for m in other.layout.differences(first.layout, first.uri)]


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
    scans = [scan_set(uri, expected_shape, deep, filesystem) for uri in uris]
    if val_uri is not None:
        scans.append(scan_set(val_uri, expected_shape, deep, filesystem))
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
    """argparse type for C,H,W."""
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W (three positive integers), got {text!r}")
    return parts[0], parts[1], parts[2]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m astropt.data.check",
        description="Find every problem of shard sets in one pass (file and row of each); exit "
        "status 1 when there are problems.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="shard set folders or URIs")
    parser.add_argument(
        "--val", metavar="PATH", help="a validation set: must share no id with PATHs"
    )
    parser.add_argument("--expect-shape", type=_shape, metavar="C,H,W", help="every image's shape")
    parser.add_argument(
        "--deep",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also read every image (default; --no-deep: footers and ids only)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print every problem; 0 when there are none, 1 when there are, 2 on bad arguments."""
    args = _parser().parse_args(argv)
    problems = check_sets(args.paths, args.val, args.expect_shape, args.deep)
    for problem in problems:
        print(problem)
    sets = len(args.paths) + (args.val is not None)
    print(
        f"{len(problems)} problem(s) in {sets} shard set(s)"
        if problems
        else f"ok: {sets} shard set(s)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
