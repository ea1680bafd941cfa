"""Metric points: written in batches, each (metric, step) once."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mlflow.entities import Metric as MetricPoint
from mlflow.tracking import MlflowClient

from astropt.record.names import Metric

log = logging.getLogger(__name__)
MAX_BATCH = 1000  # MLflow's limit on entities per log_batch call


def logged_through(client: MlflowClient, run_id: str) -> dict[str, int]:
    """For each metric of a run, the highest step already logged."""
    keys = client.get_run(run_id).data.metrics
    return {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in keys}


def metric_history(client: MlflowClient, run_id: str, key: str) -> list[MetricPoint]:
    return client.get_metric_history(run_id, key)


def validation_curve(client: MlflowClient, run_id: str) -> tuple[list[float], list[float]]:
    """A run's (tokens seen, val loss) at each evaluation, in step order, joined on the step
    (the last value where a step was logged twice). The step-0 evaluation is left out: it has
    seen no tokens, so it has no place on a log tokens or compute axis."""
    loss = {m.step: m.value for m in metric_history(client, run_id, Metric.VAL_LOSS)}
    tokens = {m.step: m.value for m in metric_history(client, run_id, Metric.TOKENS_SEEN)}
    steps = sorted(step for step in loss.keys() & tokens.keys() if tokens[step] > 0)
    return [tokens[s] for s in steps], [loss[s] for s in steps]


@dataclass
class MetricBuffer:
    """Collects metric points and writes them in batches, each (key, step) at most once."""

    client: MlflowClient
    run_id: str
    skip_through: dict[str, int] = field(default_factory=dict)
    _pending: dict[tuple[str, int], MetricPoint] = field(default_factory=dict)

    @property
    def pending(self) -> list[MetricPoint]:
        return list(self._pending.values())

    def add(self, step: int, values: Mapping[str, float]) -> None:
        """Queue points; a (key, step) already logged is dropped, one already queued replaced."""
        now = int(time.time() * 1000)
        self.add_points(MetricPoint(key, float(value), now, step) for key, value in values.items())

    def add_points(self, points: Iterable[MetricPoint]) -> None:
        """Queue points as they were recorded (timestamp included), except those logged."""
        for point in points:
            if point.step > self.skip_through.get(point.key, -1):
                self._pending[(point.key, point.step)] = point

    def flush(self) -> bool:
        """Write what is pending; on failure keep the unwritten points and return False."""
        while self._pending:
            chunk = self.pending[:MAX_BATCH]
            try:
                self.client.log_batch(self.run_id, metrics=chunk)
            except Exception as error:  # unreachable server, timeouts, a locked store
                log.warning("MLflow write failed (%s); %d points kept", error, len(self._pending))
                return False
            for point in chunk:
                del self._pending[(point.key, point.step)]
                held = self.skip_through.get(point.key, -1)
                self.skip_through[point.key] = max(point.step, held)
        return True
