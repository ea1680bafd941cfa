"""Rank 0's record keeping for a run: its MLflow metric buffer, retries, spool and weights.

The worker loop hands it metric points; it writes them only after the checkpoint that covers
them is stored (`pending` travels inside the checkpoint), so a restarted run neither repeats a
step nor loses one. At the end it retries an unreachable MLflow for `tracking.final_wait_s`,
then spools what MLflow lacks (`python -m astropt.spool upload` sends it later). Other ranks
get a `Recorder` with no buffer, which records nothing.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from mlflow.entities import Metric as MetricPoint
from safetensors.torch import save_file

from astropt.config import ModelConfig
from astropt.record import (
    CONFIG_FILE,
    MODEL_ARTIFACT,
    WEIGHTS_FILE,
    MetricBuffer,
    logged_through,
    make_client,
    set_tags,
)
from astropt.spool import spool_folder, write_spool
from astropt.storage import copy_folder, join

FIRST_RETRY_WAIT_S = 5.0  # then doubling, until the run's tracking.final_wait_s is spent
#: Short MLflow HTTP retries in workers: a server that is away must not stall training for minutes.
MLFLOW_WORKER_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
log = logging.getLogger(__name__)

#: A metric point as carried in a checkpoint: (key, value, timestamp ms, step).
Point = tuple[str, float, int, int]


class Recorder:
    """MLflow for rank 0 of a run; a silent stand-in on other ranks (`active` False)."""

    def __init__(
        self, tracking_uri: str, run_id: str, run_dir: str, wait_s: float, active: bool
    ) -> None:
        self.run_id, self.run_dir, self.wait_s, self.active = run_id, run_dir, wait_s, active
        self.tracking_uri = tracking_uri
        self.buffer: MetricBuffer | None = None
        if active:
            for key, value in MLFLOW_WORKER_ENV.items():
                os.environ.setdefault(key, value)
            client = make_client(tracking_uri)
            self.buffer = MetricBuffer(client, run_id, logged_through(client, run_id))

    def add(self, step: int, metrics: Mapping[str, float]) -> None:
        if self.buffer is not None:
            self.buffer.add(step, metrics)

    def carry(self, points: Iterable[Point]) -> None:
        """Points a checkpoint carried: queued again, those MLflow already holds dropped."""
        if self.buffer is not None:
            self.buffer.add_points(MetricPoint(*point) for point in points)

    def pending(self) -> list[Point]:
        """What MLflow does not hold yet, to store inside the next checkpoint."""
        if self.buffer is None:
            return []
        return [(m.key, m.value, m.timestamp, m.step) for m in self.buffer.pending]

    def flush(self) -> None:
        """Send what is pending (after a checkpoint stored it); an outage keeps it for later."""
        if self.buffer is not None:
            self.buffer.flush()

    def tag(self, tags: Mapping[str, object]) -> None:
        """Tags about where and how far the run got; MLflow being down only warns."""
        if self.buffer is None:
            return
        try:
            set_tags(self.buffer.client, self.run_id, tags)
        except Exception as error:
            log.warning("MLflow: tags %s not written (%s)", sorted(tags), error)

    def export_weights(self, state: Mapping[str, object], model: ModelConfig) -> None:
        """safetensors weights plus their config, logged to the run's `model/` artifacts (or,
        if MLflow cannot take them, kept beside the spool for the user to log)."""
        if self.buffer is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_file(dict(state), Path(tmp) / WEIGHTS_FILE)
            (Path(tmp) / CONFIG_FILE).write_text(model.model_dump_json(indent=2))
            try:
                self.buffer.client.log_artifacts(self.run_id, tmp, artifact_path=MODEL_ARTIFACT)
            except Exception as error:
                kept = join(spool_folder(self.run_dir), f"{self.run_id}-model")
                copy_folder(tmp, kept)
                log.error("weights not logged to MLflow (%s); kept in %s", error, kept)

    def close(self, tags: Mapping[str, object]) -> None:
        """Write every pending point and `tags`, retrying for the run's wait; what still cannot
        be written is spooled."""
        if self.buffer is None:
            return
        deadline = time.monotonic() + self.wait_s
        wait = FIRST_RETRY_WAIT_S
        while True:
            if self.buffer.flush():
                try:
                    set_tags(self.buffer.client, self.run_id, tags)
                    return
                except Exception as error:  # the server went away between the two writes
                    log.warning("MLflow tags not written: %s", error)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(wait, remaining))
            wait *= 2
        folder = spool_folder(self.run_dir)
        path = write_spool(folder, self.run_id, self.buffer.pending, tags)
        log.error(
            "MLflow unreachable: %d metric points and the run's tags kept in %s; send them with "
            "`python -m astropt.spool upload %s --tracking-uri URI`",
            len(self.buffer.pending), path, folder,
        )  # fmt: skip
