"""A run's validation curve, read back from a real (sqlite) MLflow store."""

from pathlib import Path

from mlflow.entities import Metric as MetricPoint
from mlflow.tracking import MlflowClient

from astropt.record import Metric, validation_curve


def test_the_curve_joins_loss_and_tokens_on_the_step_from_the_first_evaluation_on(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("c", artifact_location=(tmp_path / "a").as_uri())
    run = client.create_run(experiment).info.run_id
    tokens = [MetricPoint(Metric.TOKENS_SEEN, 960.0 * s, 0, s) for s in range(0, 301, 25)]
    # step 0 (no tokens seen), two evaluations, and step 200 logged again by a resumed run
    losses = [(0, 0.41), (100, 0.30), (200, 0.27), (200, 0.26), (300, 0.25)]
    points = [MetricPoint(Metric.VAL_LOSS, v, 1 + i, s) for i, (s, v) in enumerate(losses)]
    client.log_batch(run, metrics=tokens + points)
    assert validation_curve(client, run) == ([96_000.0, 192_000.0, 288_000.0], [0.30, 0.26, 0.25])
