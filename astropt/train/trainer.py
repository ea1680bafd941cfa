"""Driver side of one run: check the data, read what it holds, build the `TorchTrainer`.

Everything that can be wrong with the input is found here, before any worker starts.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import ray
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from astropt.cluster import Connection
from astropt.config import DataConfig, ImageConfig, ResourcesConfig, TrainConfig
from astropt.data.check import require_valid_split
from astropt.data.pipeline import ShardFiles
from astropt.data.schema import ShardSet
from astropt.storage import absolute_uri, join
from astropt.train.job import WorkerJob
from astropt.train.loop import train_loop_per_worker
from astropt.train.plan import DataFacts, PlanError, TrainPlan

#: CPUs a cluster must keep free for Ray Data: it lists the shards, at the start of every
#: epoch, in a task that asks for a whole CPU and that Ray Data offers no setting for. With
#: less free, the first batch never comes.
DATA_CPUS = 1.0
#: Ray Train's controller takes each report off a one-slot queue only when it polls the workers
#: (every 2 s by default), and a worker's next report waits for that. A user's own value wins.
CONTROLLER_POLL = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")


def require_data_cpus(
    resources: ResourcesConfig, cluster_cpus: float, runs_at_once: int = 1
) -> None:
    """Refuse a layout whose workers reserve every CPU: Ray Data could never read, and the run
    would hang instead of failing."""
    reserved = runs_at_once * resources.workers * resources.cpus_per_worker
    if reserved + DATA_CPUS > cluster_cpus:
        raise PlanError(
            f"resources.cpus_per_worker: {runs_at_once} run(s) x {resources.workers} workers x "
            f"{resources.cpus_per_worker} CPUs = {reserved:g} of the cluster's {cluster_cpus:g} "
            f"CPUs, leaving less than the {DATA_CPUS} CPU that reading the shards needs; "
            "lower cpus_per_worker, workers or max_concurrent"
        )


def require_data_cpus_here(
    connection: Connection, resources: ResourcesConfig, runs_at_once: int = 1
) -> None:
    """`require_data_cpus` on a cluster this process started; an autoscaling one may grow."""
    if connection.started_local:
        require_data_cpus(resources, ray.cluster_resources().get("CPU", 0.0), runs_at_once)


def check_data(data: DataConfig, image: ImageConfig) -> None:
    """Refuse bad shards up front, naming every problem with its file and row."""
    train, val = data.uris()
    require_valid_split(train, val, expected_shape=image.shape, deep=data.check == "full")


@dataclass(frozen=True)
class RunData:
    """What the driver read of a run's data: facts for the plan, files for the workers."""

    facts: DataFacts
    train_files: ShardFiles

    @classmethod
    def read(cls, train_uri: str, val_uri: str) -> RunData:
        return cls(cls.read_facts(train_uri, val_uri), ShardFiles.of(train_uri))

    @staticmethod
    def read_facts(train_uri: str, val_uri: str) -> DataFacts:
        train, val = ShardSet(train_uri), ShardSet(val_uri)
        fingerprint = f"{train.fingerprint()}-{val.fingerprint()}"
        return DataFacts(train.num_rows, val.num_rows, fingerprint)


def run_dir(storage_path: str, name: str) -> str:
    """A run's folder in storage: its checkpoints and MLflow spool."""
    return join(absolute_uri(storage_path), name)


def worker_job(
    cfg: TrainConfig,
    plan: TrainPlan,
    data: RunData,
    resources: ResourcesConfig,
    *,
    name: str,
    run_id: str,
    storage_path: str,
    tracking_uri: str,
    tracking_wait_s: float,
    in_process: bool,
    resume_from: str | None = None,
    board: ray.actor.ActorHandle | None = None,
) -> WorkerJob:
    return WorkerJob(
        name=name,
        train=cfg,
        plan=plan,
        train_files=data.train_files,
        val_uri=cfg.val_uri,
        run_id=run_id,
        run_dir=run_dir(storage_path, name),
        tracking_uri=tracking_uri,
        tracking_wait_s=tracking_wait_s,
        threads=resources.threads_per_worker or max(1, math.ceil(resources.cpus_per_worker)),
        in_process=in_process,
        submitted_at=time.time(),
        resume_from=resume_from,
        board=board,
    )


def build_trainer(
    job: WorkerJob, resources: ResourcesConfig, storage_path: str, max_failures: int
) -> TorchTrainer:
    """A `TorchTrainer` that runs the job's loop: inside this process for a one-worker CPU run
    (Ray Train's local mode: no worker group to start), else on a worker group."""
    os.environ.setdefault(*CONTROLLER_POLL)  # read by TorchTrainer.fit, passed to its controller
    per_worker = {"CPU": resources.cpus_per_worker}
    if resources.use_gpu:
        per_worker["GPU"] = resources.gpus_per_worker
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job},
        scaling_config=ScalingConfig(
            num_workers=0 if job.in_process else resources.workers,
            use_gpu=resources.use_gpu,
            resources_per_worker=per_worker,
            accelerator_type=resources.accelerator_type if resources.use_gpu else None,
            # GPU workers on one node: a group never spreads over smaller nodes that other
            # cells' node type is for (the autoscaler would launch them for it)
            placement_strategy="STRICT_PACK" if resources.use_gpu else "PACK",
        ),
        run_config=RunConfig(
            name=job.name,
            storage_path=absolute_uri(storage_path),
            failure_config=FailureConfig(max_failures=max_failures),
        ),
    )
