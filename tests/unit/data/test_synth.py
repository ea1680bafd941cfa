"""Synthetic galaxies: determinism, splits, metadata ranges, image content, caching."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from astropt.data import synth
from astropt.data.schema import ShardSet, decode_images
from astropt.patches import images_to_tokens

SIZE = 16


def read_set(path) -> tuple[list[str], np.ndarray, dict]:
    table = pq.read_table(path)
    images = decode_images(table.column("image"), (3, SIZE, SIZE))
    return table.column("object_id").to_pylist(), images, table.drop_columns(["image"]).to_pydict()


def test_deterministic_and_independent_of_shard_size(tmp_path):
    synth.generate(str(tmp_path / "a"), 300, SIZE, seed=3, shard_size=1000)
    synth.generate(str(tmp_path / "b"), 300, SIZE, seed=3, shard_size=37)
    synth.generate(str(tmp_path / "c"), 300, SIZE, seed=4, shard_size=1000)
    assert len(ShardSet(tmp_path / "b" / "train").names) > 1
    for split in ("train", "val"):
        ids_a, images_a, meta_a = read_set(tmp_path / "a" / split)
        ids_b, images_b, meta_b = read_set(tmp_path / "b" / split)
        assert ids_a == ids_b and meta_a == meta_b
        np.testing.assert_array_equal(images_a, images_b)
    _, other, _ = read_set(tmp_path / "c" / "train")
    assert not np.array_equal(other[:10], read_set(tmp_path / "a" / "train")[1][:10])


def test_galaxy_does_not_depend_on_n():
    (ids_small, small, meta_small), *_ = synth.iter_galaxies(20, SIZE, "grz", seed=1)
    (ids_large, large, meta_large), *_ = synth.iter_galaxies(300, SIZE, "grz", seed=1)
    assert ids_large[:20] == ids_small
    np.testing.assert_array_equal(large[:20], small)
    np.testing.assert_array_equal(meta_large["mag_r"][:20], meta_small["mag_r"])


def test_splits_disjoint_and_metadata_physical(tmp_path):
    counts = synth.generate(str(tmp_path), 400, SIZE, bands=("g", "r", "i", "z"), seed=0)
    train = pq.read_table(tmp_path / "train")
    val = pq.read_table(tmp_path / "val")
    train_ids, val_ids = set(train["object_id"].to_pylist()), set(val["object_id"].to_pylist())
    assert not train_ids & val_ids and len(train_ids | val_ids) == 400
    assert counts == {"train": len(train_ids), "val": len(val_ids)} and 15 <= len(val_ids) <= 70
    assert ShardSet(tmp_path / "train").bands == ["g", "r", "i", "z"]
    meta = train.drop_columns(["image"]).to_pandas()
    assert set(meta.columns) - {"object_id"} == {f.name for f in synth.METADATA_FIELDS}
    ranges = {
        "sersic_n": (0.5, 8),
        "r_eff_pix": (0.1, SIZE),
        "ellipticity": (0, 0.95),
        "position_angle": (0, np.pi),
        "bulge_fraction": (0, 1),
        "mag_r": (10, 24),
        "g_r": (-0.5, 2.5),
        "r_z": (-0.5, 2.0),
        "redshift": (0.01, 0.3),
        "arm_strength": (0, 1),
        "bar_strength": (0, 1),
        "dust_strength": (0, 1),
        "psf_fwhm_pix": (0.1, SIZE / 4),
        "sky_level": (0, 10),
    }
    for column, (low, high) in ranges.items():
        assert meta[column].between(low, high).all(), column
    assert meta["n_arms"].between(0, 4).all() and meta["n_clumps"].between(0, 8).all()
    assert meta["artefact"].isin(synth.ARTEFACTS).all()
    assert (meta["has_artefact"] == (meta["artefact"] != "none")).all()
    assert meta["has_neighbour"].any() and (meta["n_arms"] > 0).any()
    assert meta["sersic_n"].std() > 0.5 and meta["mag_r"].std() > 0.5
    # redder bulges: bulge-dominated galaxies have redder g-r than discs
    early = meta["bulge_fraction"] > 0.7
    assert meta.loc[early, "g_r"].mean() > meta.loc[~early, "g_r"].mean() + 0.1


def test_images_have_structure():
    _, images, meta = next(synth.iter_galaxies(64, 32, "grz", seed=2))
    flat = images.reshape(len(images), -1).astype(np.float64)
    assert (flat.std(axis=1) > 5).all()  # not constant
    centre = images[:, :, 12:20, 12:20].mean(axis=(1, 2, 3))
    edge = images[:, :, :4, :].mean(axis=(1, 2, 3))
    assert np.median(centre - edge) > 40  # a galaxy in the middle
    assert np.corrcoef(meta["mag_r"], -centre)[0, 1] > 0.2  # brighter galaxies, brighter pixels


def test_most_patches_carry_the_galaxy_not_the_noise():
    """Two noise draws of the same galaxies agree on most standardised patches: the stamp is cut
    to the galaxy, so per-patch standardisation does not turn most patches into pure noise
    (version 1 framed galaxies twice as loosely: median agreement 0.25)."""
    params = synth.draw_parameters(np.random.default_rng(5), 64, 32)
    first, second = (
        images_to_tokens(torch.from_numpy(synth.render(params, 32, "grz", rng)), 8)
        for rng in (np.random.default_rng(1), np.random.default_rng(2))
    )
    agreement = (first * second).mean(-1)  # per patch: the signal's share of its variance
    assert agreement.median() > 0.6
    assert (agreement > 0.5).float().mean() > 0.6


def test_galaxies_fill_the_stamp_at_every_size():
    for size in (16, 32, 64):
        (_, _, meta), *_ = synth.iter_galaxies(256, size, "grz", seed=0)
        ratio = np.median(meta["r_eff_pix"]) / size
        assert 0.12 < ratio < 0.3, size


def test_cli_writes_sets_and_preview(tmp_path, capsys):
    preview = tmp_path / "preview.png"
    args = ["--out", str(tmp_path / "d"), "--n", "20", "--size", str(SIZE), "--preview"]
    synth.main([*args, str(preview)])
    assert "training" in capsys.readouterr().out and preview.stat().st_size > 0
    with pytest.raises(SystemExit, match="already exists"):
        synth.main([*args, str(preview)])
    with pytest.raises(SystemExit, match="unknown bands"):
        synth.main(["--out", str(tmp_path / "e"), "--n", "2", "--bands", "g,q"])
