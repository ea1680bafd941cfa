"""What the driver sends each worker of a run: its configuration, its plan, and where to record."""

from __future__ import annotations

from dataclasses import dataclass

import ray

from astropt.config import TrainConfig
from astropt.data.pipeline import ShardFiles
from astropt.train.plan import TrainPlan


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker needs. `run_dir` is the run's folder in storage: its checkpoints
    and MLflow spool live there; `resume_from` is another run's checkpoint to start from (a
    branch's trunk) when the run has none of its own."""

    name: str
    train: TrainConfig
    plan: TrainPlan
    train_files: ShardFiles
    val_uri: str
    run_id: str
    run_dir: str
    tracking_uri: str
    tracking_wait_s: float
    threads: int
    in_process: bool
    submitted_at: float
    resume_from: str | None = None
    board: ray.actor.ActorHandle | None = None
