"""The branching protocol: how a branch waits for its trunk, and what it inherits from it.

A trunk is an ordinary run that keeps its checkpoints at its branches' steps (`keep_steps`).
A branch may start once the trunk's checkpoint at its step is complete (`checkpoint.COMPLETE`),
and gives up when the trunk's driver has marked the trunk failed (`FAILED_MARKER` in the trunk's
folder, written when its trial fails for good and cleared when it starts again). A finished
branch's MLflow run receives the trunk's curve up to the branch step, once, tagged
`Tag.INHERITED`, so that every cell shows one continuous curve. When every branch of a trunk is
done its branch points are released, keeping its latest checkpoint only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from mlflow.tracking import MlflowClient

from astropt import storage
from astropt.record import Metric, MetricBuffer, Tag, metric_history, set_tags
from astropt.train import checkpoint

FAILED_MARKER = "TRUNK_FAILED"
POLL_S = 2.0
#: The trunk's curve a branch inherits (timings and throughput stay the trunk's own).
CURVE = (Metric.TRAIN_LOSS, Metric.VAL_LOSS, Metric.LR, Metric.TOKENS_SEEN, Metric.EPOCHS)


class TrunkFailed(RuntimeError):
    """A branch's trunk failed, so the branch cannot start."""


def mark_failed(trunk_dir: str) -> None:
    storage.touch(storage.join(trunk_dir, FAILED_MARKER))


def clear_failed(trunk_dir: str) -> None:
    storage.remove(storage.join(trunk_dir, FAILED_MARKER))


def wait_for_branch_point(trunk: str, trunk_dir: str, step: int, limit_s: float) -> str:
    """The trunk's complete checkpoint at `step`, once it exists (polling)."""
    deadline = time.time() + limit_s
    while time.time() < deadline:
        if storage.exists(storage.join(trunk_dir, FAILED_MARKER)):
            raise TrunkFailed(f"trunk {trunk} failed; its branches cannot start")
        if checkpoint.is_complete(trunk_dir, step):
            return checkpoint.path_of(trunk_dir, step)
        if (latest := checkpoint.complete_steps(trunk_dir)[-1:]) and latest[0] > step:
            raise TrunkFailed(
                f"trunk {trunk} is at step {latest[0]} in {trunk_dir} and kept no checkpoint at "
                f"step {step}, this branch's start (its branch points were released once its "
                "branches finished); remove that folder to train the trunk again"
            )
        time.sleep(POLL_S)
    raise TimeoutError(f"no checkpoint at step {step} of trunk {trunk} within {limit_s:.0f} s")


def inherit_history(client: MlflowClient, trunk_run: str, branch_run: str, step: int) -> int:
    """Copy the trunk's curve up to `step` into the branch's run, once (the tag says it was
    done; the branch itself logs only later steps); returns the points copied."""
    if Tag.INHERITED in client.get_run(branch_run).data.tags:
        return 0
    buffer = MetricBuffer(client, branch_run)
    for key in CURVE:
        points = [p for p in metric_history(client, trunk_run, key) if p.step <= step]
        buffer.add_points(points)
    copied = len(buffer.pending)
    if not buffer.flush():
        raise ConnectionError(f"MLflow refused the inherited history of run {branch_run}")
    set_tags(client, branch_run, {Tag.INHERITED: step})
    return copied


def release_branch_points(trunk_dir: str, steps: Iterable[int]) -> None:
    """Delete a trunk's branch-point checkpoints but its latest one."""
    latest = set(checkpoint.complete_steps(trunk_dir)[-1:])
    for step in set(steps) - latest:
        storage.remove(checkpoint.path_of(trunk_dir, step))
