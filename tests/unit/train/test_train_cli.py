"""`python -m astropt.train` refuses bad input before any worker starts, naming what is wrong."""

from pathlib import Path

import pytest

from astropt.data.synthetic_sets import ensure_synthetic_dataset
from astropt.train.cli import main


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "synthetic-32"
    ensure_synthetic_dataset(str(root), 200, 32, 0)
    return root


def _error(capsys) -> str:
    return capsys.readouterr().err


def test_missing_data_path(capsys, tmp_path):
    assert main(["--tokens", "1e5", "--data", str(tmp_path / "nowhere")]) == 2
    err = _error(capsys)
    assert "nowhere/train" in err and "does not exist" in err


def test_wrong_image_shape(capsys, small_set):
    assert main(["--tokens", "1e5", "--data", str(small_set), "--image-size", "64"]) == 2
    err = _error(capsys)
    assert "(3, 32, 32)" in err.replace("[", "(").replace("]", ")") or "3, 32, 32" in err
    assert "64" in err and "train" in err


def test_empty_shard_set(capsys, tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    assert main(["--tokens", "1e5", "--data", str(tmp_path)]) == 2
    assert "no *.parquet files" in _error(capsys)


def test_a_budget_too_small_for_the_minimum_steps(capsys, small_set):
    args = ["--tokens", "100", "--data", str(small_set), "--image-size", "32", "--patch-size", "8"]
    assert main(args) == 2
    assert "1M at 100 tokens: training.min_steps 200: even one image per worker" in _error(capsys)
