"""Shard format: write, open, decode, fingerprint, split writers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from astropt.data.schema import ShardSet, decode_images, is_validation, shard_schema
from astropt.data.writers import ShardWriter, SplitWriter, write_shard

SHAPE = (3, 8, 8)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8)


def test_round_trip(tmp_path):
    pixels = images(5)
    metadata = {
        "redshift": np.linspace(0.1, 0.5, 5),
        "count": np.arange(5),
        "flag": np.array([True, False, True, False, True]),
        "kind": ["a", "b", "c", "d", "e"],
    }
    ids = [f"obj{i}" for i in range(5)]
    write_shard(tmp_path / "set" / "part-00000.parquet", ids, pixels, ["g", "r", "z"], metadata)

    shards = ShardSet(tmp_path / "set")
    assert shards.image_shape == SHAPE
    assert shards.bands == ["g", "r", "z"]
    assert shards.num_rows == 5
    assert shards.metadata_columns == ["redshift", "count", "flag", "kind"]
    types = [shards.schema.field(c).type for c in shards.metadata_columns]
    assert types == [pa.float64(), pa.int64(), pa.bool_(), pa.string()]
    table = pq.read_table(shards.paths[0])
    assert table.column("object_id").to_pylist() == ids
    np.testing.assert_array_equal(decode_images(table.column("image"), SHAPE), pixels)
    np.testing.assert_array_equal(table.column("redshift").to_numpy(), metadata["redshift"])
    assert [f.name for f in tmp_path.joinpath("set").iterdir()] == ["part-00000.parquet"]


def test_decode_variants_share_memory_where_possible():
    pixels = images(6)
    column = pa.array([p.tobytes() for p in pixels], type=pa.binary(int(np.prod(SHAPE))))
    sliced = decode_images(column.slice(2, 3), SHAPE)
    np.testing.assert_array_equal(sliced, pixels[2:5])
    width = int(np.prod(SHAPE))
    assert sliced.ctypes.data == column.buffers()[1].address + 2 * width  # a view, not a copy
    chunked = pa.chunked_array([column.slice(0, 2), column.slice(2)])
    np.testing.assert_array_equal(decode_images(chunked, SHAPE), pixels)
    fixed_bytes = np.array([p.tobytes() for p in pixels], dtype=f"S{pixels[0].size}")
    np.testing.assert_array_equal(decode_images(fixed_bytes, SHAPE), pixels)
    objects = np.array([p.tobytes() for p in pixels], dtype=object)
    np.testing.assert_array_equal(decode_images(objects, SHAPE), pixels)
    with pytest.raises(ValueError, match="expected binary"):
        decode_images(column, (3, 4, 4))


def test_fingerprint_changes_with_files(tmp_path):
    for i in range(2):
        write_shard(tmp_path / f"part-{i:05d}.parquet", [f"a{i}"], images(1, i), "grz")
    before = ShardSet(tmp_path).fingerprint()
    assert ShardSet(f"file://{tmp_path}").fingerprint() == before
    (tmp_path / ".part-00002.parquet.tmp").write_bytes(b"half written")  # ignored
    assert ShardSet(tmp_path).fingerprint() == before
    write_shard(tmp_path / "part-00001.parquet", ["a1", "b1"], images(2, 5), "grz")
    assert ShardSet(tmp_path).fingerprint() != before


def test_writers_split_rows_deterministically(tmp_path):
    schema = shard_schema(SHAPE, "grz", [pa.field("index", pa.int64())])
    with ShardWriter(str(tmp_path / "plain"), schema, shard_size=4) as writer:
        for start in range(0, 10, 3):
            n = min(3, 10 - start)
            writer.add([f"x{i}" for i in range(start, start + n)], images(n), {"index": range(n)})
    assert writer.files == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [f.num_rows for f in ShardSet(tmp_path / "plain").files] == [4, 4, 2]

    ids = [f"obj{i}" for i in range(200)]
    split = SplitWriter(str(tmp_path / "split"), schema, val_fraction=0.2, shard_size=64)
    split.add(ids, images(200), {"index": np.arange(200)})
    counts = split.close()
    train = pq.read_table(tmp_path / "split" / "train").column("object_id").to_pylist()
    val = pq.read_table(tmp_path / "split" / "val").column("object_id").to_pylist()
    assert counts == {"train": len(train), "val": len(val)}
    assert sorted(train + val) == sorted(ids) and 20 <= len(val) <= 60
    assert val == [i for i in ids if is_validation(i, 0.2)]
    with pytest.raises(FileExistsError):
        SplitWriter(str(tmp_path / "split"), schema, val_fraction=0.2)


def test_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_shard(tmp_path / "x.parquet", ["a"], images(1).astype(np.float32), "grz")
    with pytest.raises(ValueError, match="band names"):
        shard_schema(SHAPE, ["g", "r"])
    with pytest.raises(FileNotFoundError, match=r"no \*\.parquet"):
        ShardSet(tmp_path)
