"""MLflow unreachable: before a sweep (clear error), briefly during a run (nothing lost), for
good (the run finishes, its metrics are spooled, `astropt.spool upload` sends them later)."""

from __future__ import annotations

import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from astropt.config import (
    DataConfig,
    ModelConfig,
    ResourcesConfig,
    TrackingConfig,
    TrainConfig,
    TrainingConfig,
)
from astropt.record import TrackingUnreachable, require_reachable
from astropt.spool import upload
from astropt.train.run import run_training

pytestmark = pytest.mark.slow

STEPS = 40


@pytest.fixture(autouse=True)
def short_mlflow_retries(monkeypatch):
    """The driver's own MLflow calls give up in seconds, as the workers' do."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def _config(galaxies: tuple[str, str]) -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(n_layer=1, n_head=2, n_embd=32, image_size=64),
        data=DataConfig(train=galaxies[0], val=galaxies[1]),
        tokens=STEPS * 960,
        training=TrainingConfig(
            lr=2e-3, eval_every=10, checkpoint_every=10, log_every=5, eval_batches=1
        ),
    )


def _when_logging_starts(client: MlflowClient, name: str, action) -> threading.Thread:
    """Run `action` once the run `name` has its first metrics in MLflow (first checkpoint)."""

    def wait_then_act() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                runs = client.search_runs(
                    [client.get_experiment_by_name("t").experiment_id],
                    filter_string=f"tags.`astropt.cell` = '{name}'",
                )
                if runs and "train/loss" in runs[0].data.metrics:
                    action()
                    return
            except Exception:
                pass
            time.sleep(0.5)

    thread = threading.Thread(target=wait_then_act, daemon=True)
    thread.start()
    return thread


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    steps = [m.step for m in client.get_metric_history(run_id, key)]
    assert len(steps) == len(set(steps)), f"{key}: repeated steps {sorted(steps)}"
    return sorted(steps)


def _assert_complete(client: MlflowClient, run_id: str) -> None:
    assert _steps(client, run_id, "train/loss") == list(range(5, STEPS + 1, 5))
    assert _steps(client, run_id, "val/loss") == list(range(0, STEPS + 1, 10))
    run = client.get_run(run_id)
    assert run.data.metrics["final/tokens_seen"] == STEPS * 960
    assert run.data.tags["astropt.status"] == "finished"


def test_an_unreachable_server_is_a_clear_error_before_anything_starts():
    with pytest.raises(
        TrackingUnreachable, match=r"tracking.uri: the MLflow server .* not reachable"
    ):
        require_reachable("http://127.0.0.1:9", timeout_s=2)


def test_a_brief_outage_loses_no_metric(ray_local, galaxies, mlflow_server, tmp_path):
    # Room for a slow restart: the run may end while the server is still starting again.
    tracking = TrackingConfig(uri=mlflow_server.uri, experiment="t", final_wait_s=300)
    client = MlflowClient(mlflow_server.uri)

    def outage() -> None:
        mlflow_server.stop()
        time.sleep(5)  # the later checkpoints' flushes fail; the restart takes about 6 s more
        mlflow_server.start()

    thread = _when_logging_starts(client, "brief", outage)
    outcome = run_training(
        _config(galaxies), ResourcesConfig(workers=2), tracking, name="brief",
        storage_path=str(tmp_path / "ray"),
    )  # fmt: skip
    thread.join(timeout=120)
    assert outcome.status == "finished"
    _assert_complete(client, outcome.run_id)


def test_a_lasting_outage_spools_metrics_for_upload(ray_local, galaxies, mlflow_server, tmp_path):
    tracking = TrackingConfig(uri=mlflow_server.uri, experiment="t", final_wait_s=5)
    client = MlflowClient(mlflow_server.uri)
    thread = _when_logging_starts(client, "lasting", mlflow_server.stop)
    outcome = run_training(
        _config(galaxies), ResourcesConfig(workers=2), tracking, name="lasting",
        storage_path=str(tmp_path / "ray"),
    )  # fmt: skip
    thread.join(timeout=60)
    assert outcome.status == "finished"  # known from Ray, with MLflow away
    spool = tmp_path / "ray" / "lasting" / "mlflow-spool"
    assert (spool / f"{outcome.run_id}.jsonl").is_file()
    assert (spool / f"{outcome.run_id}-model" / "model.safetensors").is_file()

    mlflow_server.start()
    sent = upload(str(spool), mlflow_server.uri)
    assert sent[outcome.run_id] > 0
    _assert_complete(client, outcome.run_id)
    assert upload(str(spool), mlflow_server.uri) == {}  # nothing sent twice
