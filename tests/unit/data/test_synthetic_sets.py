"""Synthetic sets on disk: made once, reused, and never replaced by other settings."""

from __future__ import annotations

import json

import pytest

from astropt.config import DataConfig, ImageConfig
from astropt.data.schema import ShardSet
from astropt.data.synth import GENERATOR_VERSION
from astropt.data.synthetic_sets import (
    MANIFEST,
    DataSetConflict,
    ensure_synthetic_dataset,
    expected_split,
)

SIZE = 16


def test_a_set_is_made_once_and_reused(tmp_path):
    out = tmp_path / "data"
    announced = []
    train, val = ensure_synthetic_dataset(
        str(out), 60, SIZE, seed=0, shard_size=16, announce=lambda: announced.append(1)
    )
    assert (train, val) == (f"{out}/train", f"{out}/val") and announced == [1]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["n"] == 60 and manifest["size"] == SIZE
    stamp = (out / "train" / "part-00000.parquet").stat().st_mtime_ns
    again = ensure_synthetic_dataset(
        str(out), 60, SIZE, seed=0, announce=lambda: announced.append(2)
    )
    assert again == (train, val) and announced == [1]
    assert (out / "train" / "part-00000.parquet").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary folders left


def test_a_set_made_with_other_settings_is_never_replaced(tmp_path):
    out = tmp_path / "data"
    ensure_synthetic_dataset(str(out), 60, SIZE, seed=0)
    before = ShardSet(out / "train").fingerprint()
    with pytest.raises(DataSetConflict, match=r"n: 60 there, 80 asked.*left as it is"):
        ensure_synthetic_dataset(str(out), 80, SIZE, seed=0)
    with pytest.raises(DataSetConflict, match="seed: 0 there, 1 asked"):
        ensure_synthetic_dataset(str(out), 60, SIZE, seed=1)
    assert ShardSet(out / "train").fingerprint() == before


def test_a_folder_that_is_not_a_synthetic_set_is_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("not a synthetic data set")
    with pytest.raises(DataSetConflict, match="not a synthetic data set"):
        ensure_synthetic_dataset(str(tmp_path), 10, SIZE)
    assert (tmp_path / "mine.txt").read_text() == "not a synthetic data set"


def test_sets_without_a_folder_are_named_by_what_makes_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    placed = [
        DataConfig(synthetic=spec).placed(ImageConfig(image_size=size)).root
        for spec, size in (({"images": 100}, 32), ({"images": 200}, 32), ({"images": 100}, 64),
                           ({"images": 100, "seed": 1}, 32))
    ]  # fmt: skip
    assert len(set(placed)) == 4
    assert placed[0] == str(
        tmp_path / "data" / "synthetic" / f"32px-100-seed0-v{GENERATOR_VERSION}"
    )


def test_the_split_is_known_before_the_set_is_made(tmp_path):
    counts = ensure_synthetic_dataset(str(tmp_path / "d"), 300, SIZE, seed=2)
    made = {"train": ShardSet(counts[0]).num_rows, "val": ShardSet(counts[1]).num_rows}
    assert expected_split(300, seed=2) == made
