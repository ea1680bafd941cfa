"""The shard checker finds every problem, with file and row, in one pass."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from astropt.data import check
from astropt.data.writers import write_shard

SHAPE = (3, 8, 8)


def images(n: int, seed: int = 0, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 256, (n, *shape), dtype=np.uint8)


def shard(path, ids, pixels=None) -> None:
    pixels = images(len(ids)) if pixels is None else pixels
    write_shard(path, ids, pixels, "grz", {"mag": np.arange(len(ids), dtype=float)})


def float_shard(path, ids, pixels: np.ndarray) -> None:
    """A file whose images are float32 (not allowed), written by hand."""
    width = int(np.prod(SHAPE)) * 4
    column = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(ids), [None, pa.py_buffer(pixels.astype(np.float32).tobytes())]
    )
    metadata = {
        "astropt.image_shape": json.dumps(list(SHAPE)),
        "astropt.image_dtype": "float32",
        "astropt.bands": '["g", "r", "z"]',
        "astropt.schema_version": "1",
    }
    table = pa.table({"object_id": ids, "image": column}).replace_schema_metadata(metadata)
    pq.write_table(table, path)


def valid_split(tmp_path):
    shard(tmp_path / "train" / "part-00000.parquet", ["a", "b", "c"])
    shard(tmp_path / "val" / "part-00000.parquet", ["d"])
    return str(tmp_path / "train"), str(tmp_path / "val")


def test_valid_split_has_no_problems(tmp_path):
    train, val = valid_split(tmp_path)
    assert check.check_split(train, val, expected_shape=SHAPE, deep=True) == []
    check.require_valid_split(train, val, SHAPE)
    assert check.main([train, "--val", val, "--expect-shape", "3,8,8"]) == 0


def test_every_problem_reported_in_one_pass(tmp_path):
    train, val = tmp_path / "train", tmp_path / "val"
    zeros = images(3, 1)
    zeros[1] = 0
    constant = images(2, 2)
    constant[0] = 7
    shard(train / "part-00000.parquet", ["a", "b", "c"], zeros)
    shard(train / "part-00001.parquet", ["d", "b"], constant)  # b repeats part-00000 row 1
    shard(train / "part-00002.parquet", ["e"])
    data = (train / "part-00002.parquet").read_bytes()
    (train / "part-00002.parquet").write_bytes(data[: len(data) // 2])  # truncated
    write_shard(train / "part-00003.parquet", ["f"], images(1, shape=(3, 4, 4)), "grz")
    nan = images(2, 3).astype(np.float32)
    nan[1, 0, 2, 3] = np.nan
    float_shard(train / "part-00004.parquet", ["g", "h"], nan)
    pq.write_table(pa.table({"name": ["x"]}), train / "part-00005.parquet")
    shard(val / "part-00000.parquet", ["v1", "c", "v2"])  # c is in train
    (tmp_path / "empty").mkdir()

    problems = check.check_sets(
        [str(train), str(tmp_path / "empty"), str(tmp_path / "missing")],
        val_uri=str(val),
        expected_shape=SHAPE,
        deep=True,
    )
    text = [str(p) for p in problems]
    expected = [
        f"{train}/part-00000.parquet row 1: image is all zeros",
        f"{train}/part-00001.parquet row 0: image is constant (7)",
        f"{train}/part-00001.parquet row 1: duplicate object_id 'b' "
        f"(first at {train}/part-00000.parquet row 1)",
        f"{train}/part-00002.parquet: unreadable Parquet file",
        f"{train}/part-00003.parquet: image shape [3, 4, 4], expected [3, 8, 8]",
        f"{train}/part-00003.parquet: image shape [3, 4, 4] differs from [3, 8, 8] in "
        f"{train}/part-00000.parquet",
        f"{train}/part-00004.parquet: image dtype is float32, expected uint8",
        f"{train}/part-00004.parquet row 1: image contains NaN",
        f"{train}/part-00005.parquet: schema metadata lacks astropt.image_shape",
        f"{train}/part-00005.parquet: no 'object_id' column",
        f"{train}/part-00005.parquet: no 'image' column",
        f"{tmp_path}/empty: no *.parquet files",
        f"{tmp_path}/missing: path does not exist",
        f"{val}/part-00000.parquet row 1: object_id 'c' is also in the training set "
        f"({train}/part-00000.parquet row 2)",
    ]
    for line in expected:
        assert any(t.startswith(line) for t in text), line
    assert len(problems) == len(expected)
    problem = problems[0]
    assert (problem.file, problem.row) == (f"{train}/part-00000.parquet", 1)


def test_structural_check_skips_image_content(tmp_path):
    pixels = images(2)
    pixels[0] = 0
    shard(tmp_path / "part-00000.parquet", ["a", "b"], pixels)
    assert check.check_shard_set(str(tmp_path), deep=False) == []
    assert [p.row for p in check.check_shard_set(str(tmp_path), deep=True)] == [0]


def test_require_valid_split_raises_readable_error(tmp_path, capsys):
    train, val = valid_split(tmp_path)
    shard(tmp_path / "val" / "part-00001.parquet", ["a"])
    with pytest.raises(check.ShardSetError) as error:
        check.require_valid_split(train, val, expected_shape=(3, 16, 16))
    message = str(error.value)
    assert message.startswith("4 problem(s) in the shard sets:")
    assert "image shape [3, 8, 8], expected [3, 16, 16]" in message
    assert "object_id 'a' is also in the training set" in message
    assert len(error.value.problems) == 4  # shape in each of three files, and the overlap
    assert check.main([train, "--val", val, "--no-deep"]) == 1
    assert "1 problem(s) in 2 shard set(s)" in capsys.readouterr().out
