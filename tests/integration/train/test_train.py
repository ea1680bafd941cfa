"""One training run end to end: Ray Data -> Ray Train (2 workers) -> DeepSpeed ZeRO-2 -> MLflow."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from astropt.config import (
    DataConfig,
    ModelConfig,
    ResourcesConfig,
    TrackingConfig,
    TrainConfig,
    TrainingConfig,
)
from astropt.model import AstroPT
from astropt.train.run import run_training
from astropt.train.trainer import check_data

pytestmark = pytest.mark.slow

STEPS = 60


def _config(train: str, val: str) -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(n_layer=2, n_head=2, n_embd=64, image_size=64),
        data=DataConfig(train=train, val=val),
        tokens=STEPS * 960,
        training=TrainingConfig(
            global_batch_tokens=960,
            eval_every=20,
            checkpoint_every=30,
            log_every=10,
            eval_batches=2,
            lr=2e-3,
            zero_stage=2,
        ),
    )


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def trained(ray_local, galaxies, tmp_path_factory):
    """A 2-worker ZeRO-2 run of 60 steps, shared by the assertions below."""
    tmp = tmp_path_factory.mktemp("train")
    cfg = _config(*galaxies)
    check_data(cfg.data, cfg.model.image)
    tracking = TrackingConfig(uri=f"sqlite:///{tmp / 'mlflow.db'}", experiment="t")
    outcome = run_training(
        cfg, ResourcesConfig(workers=2), tracking, name="base", storage_path=str(tmp / "ray")
    )
    return cfg, tracking, outcome, tmp


def test_two_worker_zero2_run_learns(trained):
    _, tracking, outcome, tmp = trained
    client = MlflowClient(tracking.uri)
    assert outcome.status == "finished"
    assert outcome.tokens_seen == STEPS * 960
    val = _history(client, outcome.run_id, "val/loss")
    assert [step for step, _ in val] == [0, 20, 40, 60]
    start, end = val[0][1], val[-1][1]
    assert end < 0.85 * start, val
    checkpoints = [p.name for p in sorted((tmp / "ray" / "base").glob("step_*"))]
    assert checkpoints == ["step_000000060"]  # a finished run keeps its last checkpoint only


def test_mlflow_run_holds_params_and_step_indexed_history(trained):
    cfg, tracking, outcome, _ = trained
    run = MlflowClient(tracking.uri).get_run(outcome.run_id)
    params = run.data.params
    assert params["zero_stage"] == "2" and params["world_size"] == "2"
    assert int(params["n_params"]) + 15 * 64 == int(params["n_params_total"])
    assert params["tokens_budget"] == str(STEPS * 960)
    assert params["unique_tokens"] == str(int(params["train_images"]) * 15)
    assert len(params["data_fingerprint"]) > 16
    assert run.data.tags["astropt.status"] == "finished"
    metrics = run.data.metrics
    assert metrics["final/val_loss"] == outcome.final_val_loss
    assert metrics["final/compute_6nd"] == 6 * int(params["n_params"]) * STEPS * 960
    assert metrics["final/compute_attention"] == pytest.approx(
        metrics["final/compute_6nd"] + 6 * 2 * 15 * 64 * STEPS * 960
    )
    assert metrics["final/epochs"] == pytest.approx(STEPS * 960 / int(params["unique_tokens"]))
    train_steps = [s for s, _ in _history(MlflowClient(tracking.uri), outcome.run_id, "train/loss")]
    assert train_steps == list(range(10, STEPS + 1, 10))
    lr = dict(_history(MlflowClient(tracking.uri), outcome.run_id, "lr"))
    assert lr[STEPS] == pytest.approx(2e-3 * cfg.training.optim.min_lr_ratio, rel=1e-6)


def test_exported_weights_load_into_a_fresh_model(trained):
    cfg, tracking, outcome, tmp = trained
    folder = MlflowClient(tracking.uri).download_artifacts(outcome.run_id, "model", str(tmp))
    model = AstroPT(cfg.model)
    model.load_state_dict(load_file(Path(folder) / "model.safetensors"))
    assert (Path(folder) / "config.json").read_text().count("n_embd") == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def _train_worker_pids() -> list[int]:
    """PIDs of the live Ray Train workers of this session's cluster. (Ray's public state API
    needs the dashboard, which the tests' cluster does not run.)"""
    import ray._private.state as state

    return [
        actor["Pid"]
        for actor in state.actors().values()
        if actor["ActorClassName"] == "RayTrainWorker" and actor["State"] == "ALIVE"
    ]


def _unique_steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    steps = [m.step for m in client.get_metric_history(run_id, key)]
    assert len(steps) == len(set(steps)), f"{key} has repeated steps: {sorted(steps)}"
    return sorted(steps)


def test_a_killed_worker_restarts_from_its_checkpoint_and_loses_nothing(trained):
    """SIGKILL one training worker after the first checkpoint: Ray Train restarts the group
    from it; the run ends at the planned step with every metric step logged exactly once."""
    cfg, tracking, outcome, tmp = trained
    client = MlflowClient(tracking.uri)
    killed: list[int] = []

    def kill_after_first_checkpoint() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            runs = client.search_runs(
                [client.get_experiment_by_name("t").experiment_id],
                filter_string="tags.`astropt.cell` = 'killed'",
            )
            if runs and "train/loss" in runs[0].data.metrics:  # flushed at checkpoint 30
                pids = _train_worker_pids()
                if pids:
                    os.kill(pids[-1], signal.SIGKILL)
                    killed.append(pids[-1])
                    return
            time.sleep(0.5)

    killer = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    killer.start()
    resumed = run_training(
        cfg, ResourcesConfig(workers=2), tracking, name="killed",
        storage_path=str(tmp / "ray"), max_failures=2,
    )  # fmt: skip
    killer.join(timeout=10)
    assert killed, "no worker was killed: the test did not exercise a failure"
    assert resumed.status == "finished"
    assert resumed.tokens_seen == STEPS * 960
    assert _unique_steps(client, resumed.run_id, "train/loss") == list(range(10, STEPS + 1, 10))
    assert _unique_steps(client, resumed.run_id, "val/loss") == [0, 20, 40, 60]
    for key in ("lr", "tokens_seen", "tokens_per_s"):
        _unique_steps(client, resumed.run_id, key)
    # The restart continues the data order, so only floating-point order can differ.
    assert resumed.final_val_loss == pytest.approx(outcome.final_val_loss, rel=1e-3)


def test_a_checkpoint_that_cannot_be_written_names_its_path_and_keeps_the_previous(trained):
    """The step-60 checkpoint's model file is a link to /dev/full: writing it fails with ENOSPC,
    as on a full disk. The run fails naming that checkpoint's folder; the step-30 checkpoint is
    still the latest complete one and a plain re-run resumes from it to the planned step."""
    cfg, tracking, _, tmp = trained
    storage = tmp / "ray"
    target = storage / "full-disk" / "step_000000060"
    (target / "astropt").mkdir(parents=True)
    (target / "astropt" / "mp_rank_00_model_states.pt").symlink_to("/dev/full")
    resources = ResourcesConfig(workers=1)
    with pytest.raises(Exception) as failure:
        run_training(
            cfg, resources, tracking, name="full-disk", storage_path=str(storage), max_failures=0
        )
    message = str(failure.value)
    assert f"checkpoint of step 60 could not be written to {target}" in message, message
    assert "No space left on device" in message
    assert not target.exists(), "the partial checkpoint was left behind"
    assert [p.name for p in sorted((storage / "full-disk").glob("step_*"))] == ["step_000000030"]
    client = MlflowClient(tracking.uri)
    run = client.search_runs(
        [client.get_experiment_by_name("t").experiment_id], "tags.`astropt.cell` = 'full-disk'"
    )[0]
    assert run.data.tags["astropt.status"] == "failed"
    assert str(target) in run.data.tags["astropt.error"]

    again = run_training(cfg, resources, tracking, name="full-disk", storage_path=str(storage))
    assert again.run_id == run.info.run_id
    assert again.status == "finished" and again.tokens_seen == STEPS * 960
    assert _unique_steps(client, again.run_id, "train/loss") == list(range(10, STEPS + 1, 10))
    assert _unique_steps(client, again.run_id, "val/loss") == [0, 20, 40, 60]


def test_a_run_over_two_and_a_half_epochs_records_2_5(ray_local, tmp_path):
    """A small set (its train split a multiple of 10 images) trained for 2.5 passes: the run
    records its unique tokens, the tokens it saw and 2.5 epochs, at the end and as it goes."""
    from astropt.data.synthetic_sets import ensure_synthetic_dataset, expected_split

    total = next(n for n in range(200, 260) if expected_split(n)["train"] % 10 == 0)
    images = expected_split(total)["train"]
    train, val = ensure_synthetic_dataset(str(tmp_path / "small"), total, 32, 0)
    batch_images = images // 10  # 25 steps of a tenth of the set: 2.5 epochs
    cfg = TrainConfig(
        model=ModelConfig(n_layer=1, n_head=2, n_embd=32, image_size=32),
        data=DataConfig(train=train, val=val),
        tokens=25 * batch_images * 3,
        training=TrainingConfig(
            global_batch_tokens=batch_images * 3, micro_batch_images=batch_images,
            lr=2e-3, warmup={"steps": 2}, eval_every=25, eval_batch_images=16, eval_batches=1,
            checkpoint_every=25, log_every=5,
        ),
    )  # fmt: skip
    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="epochs")
    outcome = run_training(
        cfg, ResourcesConfig(workers=1), tracking, name="epochs", storage_path=str(tmp_path / "ray")
    )
    run = MlflowClient(tracking.uri).get_run(outcome.run_id)
    assert run.data.params["unique_tokens"] == str(images * 3)
    assert run.data.metrics["final/tokens_seen"] == 25 * batch_images * 3
    assert run.data.metrics["final/epochs"] == 2.5
    epochs = _history(MlflowClient(tracking.uri), outcome.run_id, "epochs")
    assert epochs == [(step, step / 10) for step in (0, 5, 10, 15, 20, 25)]
