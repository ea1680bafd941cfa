"""Converting Hugging Face style Parquet files and image folders into shard sets."""

from __future__ import annotations

import importlib.util
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from astropt.data import convert
from astropt.data.schema import ShardSet, decode_images

SIZE = 16


def encode(pixels: np.ndarray, kind: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=kind)
    return buffer.getvalue()


def noise_image(seed: int, height: int = 60, width: int = 80) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_hf_file(path, n: int = 6, corrupt_row: int | None = 2) -> list[str]:
    """An HF-layout file: image structs of JPEG bytes, dr8_id and a few metadata columns."""
    red = np.zeros((64, 96, 3), dtype=np.uint8)
    red[..., 0] = 255  # pure red = the z band in Legacy Survey colour images
    blobs = [encode(red)] + [encode(noise_image(i)) for i in range(1, n)]
    if corrupt_row is not None:
        blobs[corrupt_row] = b"\xff\xd8 not really a jpeg"
    ids = [f"dr8_{i}" for i in range(n)]
    table = pa.table(
        {
            "image": [{"bytes": b, "path": f"{i}.jpg"} for i, b in zip(ids, blobs, strict=True)],
            "dr8_id": ids,
            "redshift": np.linspace(0.01, 0.2, n),
            "smooth_votes": np.arange(n, dtype=np.int32),
            "survey": ["south"] * n,
            "morphology_vector": [[0.1, 0.9]] * n,
        }
    )
    pq.write_table(table, path, row_group_size=4)
    return ids


def read_output(out) -> pa.Table:
    sets = [out / name for name in ("train", "val") if any((out / name).iterdir())]
    return pa.concat_tables(pq.read_table(path) for path in sets)


def test_hf_layout_with_a_corrupt_row(tmp_path):
    source = tmp_path / "galaxies-00000.parquet"
    ids = write_hf_file(source)
    report = convert.convert_hf([str(tmp_path / "*.parquet")], str(tmp_path / "out"), SIZE)

    assert report.written["train"] + report.written["val"] == 5
    assert [str(s) for s in report.skipped] == [
        f"{source} row 2: undecodable image: not a recognised image format"
    ]
    assert "morphology_vector" in str(report)  # named as not carried over
    table = read_output(tmp_path / "out")
    assert sorted(table["object_id"].to_pylist()) == sorted(ids[:2] + ids[3:])
    assert table.column_names == ["object_id", "image", "redshift", "smooth_votes", "survey"]
    assert table.schema.field("smooth_votes").type == pa.int64()
    shards = ShardSet(tmp_path / "out" / "train")
    assert shards.image_shape == (3, SIZE, SIZE) and shards.bands == ["g", "r", "z"]
    red = table.filter(pa.compute.equal(table["object_id"], "dr8_0"))
    g, r, z = decode_images(red["image"], (3, SIZE, SIZE))[0].mean(axis=(1, 2))
    assert z > 200 and g < 40 and r < 40  # red channel stored as z, last


def test_hf_metadata_join_and_duplicates(tmp_path):
    ids = write_hf_file(tmp_path / "a.parquet", n=4, corrupt_row=None)
    write_hf_file(tmp_path / "b.parquet", n=2, corrupt_row=None)  # repeats dr8_0, dr8_1
    (tmp_path / "meta.csv").write_text("dr8_id,mass\ndr8_1,10.5\ndr8_3,11.25\n")
    report = convert.convert_hf(
        [str(tmp_path)], str(tmp_path / "out"), SIZE, metadata=str(tmp_path / "meta.csv")
    )
    assert sum(report.written.values()) == 4
    assert [s.row for s in report.skipped] == [0, 1]
    assert all("duplicate object id" in s.reason for s in report.skipped)
    table = read_output(tmp_path / "out").sort_by("object_id")
    assert table["object_id"].to_pylist() == ids
    assert table["mass"].to_pylist() == [None, 10.5, None, 11.25]


def test_image_folder_with_a_corrupt_file(tmp_path, capsys):
    folder = tmp_path / "cutouts"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(noise_image(0, 40, 40)).save(folder / "a.png")
    Image.fromarray(noise_image(1, 50, 30)).save(folder / "sub" / "b.jpeg")
    Image.fromarray(noise_image(2)[..., 0]).save(folder / "sub" / "grey.png")
    (folder / "sub" / "broken.jpg").write_bytes(encode(noise_image(3))[:200])
    (folder / "notes.txt").write_text("not an image")
    (folder / "c.fits").write_bytes(b"SIMPLE  =")
    out = str(tmp_path / "out")
    args = ["folder", "--input", str(folder), "--out", out, "--size", str(SIZE)]
    assert convert.main([*args, "--val-fraction", "0"]) == 0
    printed = capsys.readouterr().out
    assert "converted 3 images" in printed
    assert f"{folder / 'sub' / 'broken.jpg'}: undecodable image" in printed
    assert "1 files ignored: not PNG, JPEG or FITS" in printed
    if importlib.util.find_spec("astropy") is None:
        assert "1 FITS files ignored: astropy is not installed" in printed
    table = pq.read_table(tmp_path / "out" / "train")
    assert table["object_id"].to_pylist() == ["a", "sub/b", "sub/grey"]
    pixels = decode_images(table["image"], (3, SIZE, SIZE))
    assert (pixels[2, 0] == pixels[2, 2]).all()  # a grey image has equal bands


def test_everything_failing_is_an_error(tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "x.png").write_bytes(b"nope")
    with pytest.raises(convert.ConversionError, match="nothing was converted"):
        convert.convert_folder(str(folder), str(tmp_path / "out1"), SIZE)
    (tmp_path / "truncated.parquet").write_bytes(b"PAR1 and then nothing")
    with pytest.raises(convert.ConversionError, match=r"truncated\.parquet: unreadable Parquet"):
        convert.convert_hf([str(tmp_path / "truncated.parquet")], str(tmp_path / "out2"), SIZE)
    missing = ["hf", "--input", str(tmp_path / "missing"), "--out", "x", "--size", "8"]
    assert convert.main(missing) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing'} does not exist\n"
