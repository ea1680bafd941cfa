"""Downstream probes: embeddings, linear probes against baselines, MLflow logging, bad input.

One tiny astroPT is trained in-process (plain torch, one thread) on synthetic galaxies and saved
in the trainer's export format; every test below shares it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import save_file
from threadpoolctl import threadpool_limits

from astropt.config import ModelConfig
from astropt.data.synthetic_sets import ensure_synthetic_dataset
from astropt.data.writers import write_shard
from astropt.model import AstroPT
from astropt.patches import images_to_tokens
from astropt.probe import (
    EmbedSettings,
    ProbeInputError,
    embed,
    load_weights,
    probe_run,
    save_weights,
)
from astropt.probe.cli import main as probe_main
from astropt.probe.data import open_shards, read_probe_data
from astropt.probe.embedding_map import project
from astropt.probe.probes import robust_standardise
from astropt.probe.run import OUTPUT_FILES, ProbeOptions, probe_model
from astropt.probe.scale import main as scale_main
from astropt.probe.scale import probe_scale
from astropt.record import ensure_experiment

CFG = ModelConfig(n_layer=2, n_head=4, n_embd=64, image_size=64, patch_size=16)
TRAIN_STEPS, BATCH, LR = 200, 64, 2e-3
TARGETS = ["mag_r", "r_eff_pix", "has_neighbour", "artefact"]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The test machine's cores are shared: several threads per process only contend."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[str, str]:
    """(train, val) shard sets: ~1400 and ~600 64x64 synthetic galaxies."""
    root = tmp_path_factory.mktemp("probe") / "synthetic-64"
    return ensure_synthetic_dataset(str(root), 2000, 64, 0, val_fraction=0.3)


def _train(train_uri: str) -> AstroPT:
    """A few hundred AdamW steps of next-patch prediction, seeded like the trainer."""
    tokens = images_to_tokens(torch.from_numpy(_images(train_uri)), CFG.image.patch_size)
    torch.manual_seed(0)
    model = AstroPT(CFG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1)
    batches = torch.Generator().manual_seed(0)
    for _ in range(TRAIN_STEPS):
        batch = tokens[torch.randint(0, len(tokens), (BATCH,), generator=batches)]
        loss = AstroPT.loss(model(batch), batch[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _images(uri: str, n: int | None = None) -> np.ndarray:
    return read_probe_data(open_shards(uri), [], n).images


@pytest.fixture(scope="module")
def weights(synth, tmp_path_factory) -> Path:
    """The trained model as the trainer exports it: model.safetensors + config.json."""
    model = _train(synth[0])
    folder = tmp_path_factory.mktemp("weights")
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / "model.safetensors")
    (folder / "config.json").write_text(CFG.model_dump_json(indent=2))
    return folder


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _cell_run(
    uri: str, name: str, params: dict[str, object], status: str = "finished", loss: float = 0.5
) -> str:
    """A cell run of experiment probe-test with `params`, a status and a final val loss."""
    client = MlflowClient(uri)
    experiment = ensure_experiment(client, "probe-test")
    tags = {"astropt.role": "cell", "astropt.cell": name, "astropt.status": status}
    run_id = client.create_run(experiment, run_name=name, tags=tags).info.run_id
    for key, value in params.items():
        client.log_param(run_id, key, value)
    client.log_metric(run_id, "final/val_loss", loss)
    return run_id


@pytest.fixture(scope="module")
def probed(store, synth, weights) -> tuple[str, object]:
    """A cell run holding the weights as artifacts, probed by probe_run: (run id, table)."""
    run_id = _cell_run(
        store, "0.2M-D1e6-s0", {"n_params": 100_000, "seed": 0, "data_val": synth[1]}, loss=0.3
    )
    MlflowClient(store).log_artifacts(run_id, str(weights), artifact_path="model")
    return run_id, probe_run(store, run_id, targets=TARGETS)


def test_embeddings_are_deterministic_and_n_by_n_embd(synth, weights):
    model = load_weights(weights)
    images = _images(synth[1], 40)
    first = embed(model, images, EmbedSettings())
    again = embed(model, images, EmbedSettings(batch_size=16))
    assert first.shape == (40, CFG.n_embd) and first.dtype == np.float32
    np.testing.assert_allclose(first, again, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(first, embed(model, images, EmbedSettings()))
    early = embed(model, images, EmbedSettings(layer=0, tokens=4, pool="last"))
    assert early.shape == (40, CFG.n_embd) and not np.allclose(early, first)
    tokens = images_to_tokens(torch.from_numpy(images), CFG.image.patch_size)
    for pool in ("mean", "last"):  # only the pooled positions are run, with the same result
        whole = model.get_embeddings(tokens, tokens=slice(0, 6), pool=pool).numpy()
        first_six = embed(model, images, EmbedSettings(tokens=6, pool=pool))
        np.testing.assert_allclose(first_six, whole, rtol=1e-5, atol=1e-6)


def test_weights_load_from_folder_or_file_exactly(weights):
    from_folder = load_weights(weights).state_dict()
    from_file = load_weights(weights / "model.safetensors").state_dict()
    for key, value in from_folder.items():
        assert torch.equal(value, from_file[key])


def test_trained_model_beats_untrained_baseline_on_brightness_and_size(probed):
    _, table = probed
    for target in ("mag_r", "r_eff_pix"):
        trained = table.score(target, "r2")
        untrained = table.score(target, "r2", "untrained")
        assert trained.mean > untrained.mean + 0.05, (target, trained, untrained)
        assert table.score(target, "medae").mean < table.score(target, "medae", "untrained").mean
    assert 0.5 < table.score("has_neighbour", "auc").mean <= 1.0
    assert 0.5 < table.score("artefact", "auc").mean <= 1.0  # 4 classes, one-vs-rest
    assert {row.features for row in table.rows} == {"astropt", "untrained", "pixels-pca"}


def test_probe_run_logs_metrics_tags_and_artifacts_to_the_cell_run(store, probed):
    run_id, table = probed
    client = MlflowClient(store)
    run = client.get_run(run_id)
    assert run.data.metrics["probe/mag_r/r2"] == pytest.approx(table.score("mag_r", "r2").mean)
    for key in ("probe/r_eff_pix/medae_std", "probe/artefact/auc", "probe/has_neighbour/accuracy"):
        assert key in run.data.metrics
    assert "probe_baseline/untrained/mag_r/r2" in run.data.metrics
    assert "probe_baseline/pixels-pca/r_eff_pix/r2" in run.data.metrics
    assert run.data.tags["astropt.probe.data"].endswith("val")
    logged = {Path(a.path).name for a in client.list_artifacts(run_id, "probe")}
    assert logged == set(OUTPUT_FILES)
    document = json.loads(
        Path(client.download_artifacts(run_id, "probe/probe_table.json")).read_text()
    )
    assert {r["features"] for r in document["rows"]} == {"astropt", "untrained", "pixels-pca"}
    assert "robust-standardised" in document["units"]


def test_cli_probes_an_exported_folder(synth, weights, tmp_path, capsys):
    code = probe_main(
        [
            "--weights",
            str(weights),
            "--data",
            str(Path(synth[1]).parent),
            "--targets",
            "g_r",
            "--max-images",
            "150",
            "--no-baselines",
            "--out",
            str(tmp_path),
            "--format",
            "csv",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("target,kind,features,metric,mean,std") and "g_r" in out
    assert (tmp_path / "embedding_map.png").stat().st_size > 0


@pytest.fixture(scope="module")
def odd_shards(synth, tmp_path_factory) -> str:
    """30 galaxies with a constant column and a normal one."""
    folder = tmp_path_factory.mktemp("odd")
    images = _images(synth[1], 30)
    rng = np.random.default_rng(0)
    columns = {"constant": np.full(30, 2.5), "mass": rng.normal(10, 1, 30)}
    ids = [f"odd-{i}" for i in range(30)]
    write_shard(folder / "part-00000.parquet", ids, images, ["g", "r", "z"], columns)
    return str(folder)


@pytest.mark.parametrize(
    ("targets", "max_images", "message"),
    [
        (
            ["mass", "stellar_mass"],
            None,
            "unknown target column 'stellar_mass'.*available: constant, mass",
        ),
        (["constant"], None, r"target 'constant' is constant \(2.5 in all 30"),
        (["mass"], 8, r"8 usable rows .* too few for 5-fold CV; need at least 10"),
    ],
)
def test_bad_targets_are_clear_errors(weights, odd_shards, targets, max_images, message):
    with pytest.raises(ProbeInputError, match=message):
        probe_model(load_weights(weights), odd_shards, targets, max_images, ProbeOptions())


def test_missing_weights_are_clear_errors(tmp_path, store):
    with pytest.raises(ProbeInputError, match=r"missing model weights: .*model\.safetensors"):
        load_weights(tmp_path)
    run_id = _cell_run(store, "unfinished", {"seed": 0}, status="running", loss=0.1)
    with pytest.raises(ProbeInputError, match=f"run {run_id} has no artifacts model/"):
        probe_run(store, run_id, data_uri="unused")


def test_cli_exports_the_best_finished_cell_and_never_overwrites(
    store, probed, weights, tmp_path, capsys
):
    worse = _cell_run(store, "0.2M-D3e5-s0", {"seed": 1}, loss=0.4)
    untrained = save_weights(AstroPT(CFG), tmp_path / "untrained")
    MlflowClient(store).log_artifacts(worse, str(untrained), artifact_path="model")
    folder = tmp_path / "model"
    args = ["--experiment", "probe-test", "--tracking-uri", store, "--export", str(folder)]
    assert probe_main(args) == 0
    assert capsys.readouterr().out == f"run {probed[0]}: weights written to {folder}/\n"
    exported, trained = load_weights(folder).state_dict(), load_weights(weights).state_dict()
    assert all(torch.equal(exported[k], v) for k, v in trained.items())
    assert probe_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "model.safetensors" in err and "already exist" in err
    assert probe_main(["--experiment", "nope", "--tracking-uri", store]) == 2
    assert "unknown MLflow experiment 'nope'; available: " in capsys.readouterr().err


def test_cli_bad_input_is_one_line_and_exit_2(weights, odd_shards, capsys):
    code = probe_main(["--weights", str(weights), "--data", odd_shards, "--targets", "nope"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: unknown target column 'nope'")


def test_scale_correlates_probe_scores_with_size_and_loss(store, tmp_path, capsys):
    client = MlflowClient(store)
    experiment = ensure_experiment(client, "probe-scale")
    parent = client.create_run(experiment, tags={"astropt.role": "sweep"}).info.run_id
    for n, loss, r2 in (
        (1e5, 0.40, 0.50),
        (4e5, 0.35, 0.61),
        (1.6e6, 0.31, 0.70),
        (6e6, 0.30, 0.68),
    ):
        tags = {"astropt.role": "cell", "astropt.cell": f"N{n:g}", "mlflow.parentRunId": parent}
        run_id = client.create_run(experiment, tags=tags).info.run_id
        client.log_param(run_id, "n_params", int(n))
        for key, value in (
            ("final/val_loss", loss),
            ("probe/mag_r/r2", r2),
            ("probe/mag_r/r2_std", 0.01),
        ):
            client.log_metric(run_id, key, value)
    table = probe_scale(store, None, parent, tmp_path)
    row = table.iloc[0]
    assert (row["target"], row["metric"], row["n_n"]) == ("mag_r", "r2", 4)
    assert row["rho_n"] == pytest.approx(0.8) and row["rho_loss"] == pytest.approx(-0.8)
    assert (tmp_path / "probe_vs_scale.png").stat().st_size > 0
    assert client.get_run(parent).data.metrics["probe_scale/mag_r/r2/rho_n"] == pytest.approx(0.8)
    assert {Path(a.path).name for a in client.list_artifacts(parent, "probe_scale")} >= {
        "probe_vs_scale.png",
        "probe_scale.csv",
    }
    assert scale_main(["--tracking-uri", store, "--experiment", "no-such"]) == 2
    assert "unknown MLflow experiment 'no-such'" in capsys.readouterr().err


def test_robust_standardisation_drops_outliers_and_keeps_zero_inflated_targets():
    values = np.r_[np.random.default_rng(0).normal(5.0, 2.0, 400), 80.0, -70.0]
    standardised, keep = robust_standardise(values, mad_cut=5.0)
    assert keep.sum() == 400 and not keep[-2:].any()
    q1, median, q3 = np.percentile(standardised, [25, 50, 75])
    assert median == pytest.approx(0.0, abs=1e-12) and q3 - q1 == pytest.approx(1.0)
    mostly_zero = np.r_[np.zeros(320), np.linspace(0.1, 0.3, 80)]  # MAD = IQR = 0
    standardised, keep = robust_standardise(mostly_zero, mad_cut=5.0)
    assert keep.all() and np.isfinite(standardised).all() and standardised.std() == pytest.approx(1)


def test_default_targets_skip_constant_columns(weights, odd_shards):
    table = probe_model(
        load_weights(weights), odd_shards, None, None, ProbeOptions(baselines=False)
    )
    assert [(row.target, row.kind) for row in table.rows] == [("mass", "regression")]


def test_umap_maps_are_seeded_and_keep_clusters_apart():
    rng = np.random.default_rng(0)
    blobs = np.concatenate([rng.normal(0, 1, (60, 16)), rng.normal(6, 1, (60, 16))])
    first, again = project(blobs, "umap", seed=0), project(blobs, "umap", seed=0)
    assert first.shape == (120, 2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, project(blobs, "umap", seed=1))
    centre_a, centre_b = first[:60].mean(axis=0), first[60:].mean(axis=0)
    nearer_a = np.linalg.norm(first - centre_a, axis=1) < np.linalg.norm(first - centre_b, axis=1)
    assert nearer_a[:60].all() and not nearer_a[60:].any()
