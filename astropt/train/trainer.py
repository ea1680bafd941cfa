"""Driver side of one run: check the data, plan, build the `TorchTrainer`, record in MLflow.

Everything that can be wrong with the input is found here, before any worker starts.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from astropt.cluster import Connection
from astropt.config import ResourcesConfig, TrackingConfig, TrainConfig, absolute_uri
from astropt.data.check import require_valid_split
from astropt.data.pipeline import shard_dataset
from astropt.data.schema import ShardSet
from astropt.train.loop import WorkerJob, train_loop_per_worker
from astropt.train.plan import PlanError, TrainPlan, make_plan


@dataclass(frozen=True)
class PreparedRun:
    """A run whose data and arithmetic have been checked: ready to hand to Ray."""

    cfg: TrainConfig
    plan: TrainPlan
    val_batches: int
    data_fingerprint: str
    train_in_memory: bool

    def params(self) -> dict[str, object]:
        """What the run's MLflow record holds as params."""
        model = self.cfg.model
        return {
            "preset": model.name,
            "n_layer": model.n_layer,
            "n_head": model.n_head,
            "n_embd": model.n_embd,
            "image_size": model.image_size,
            "patch_size": model.patch_size,
            "n_params": self.plan.n_params,
            "n_params_total": self.plan.n_params_total,
            "tokens_budget": self.cfg.tokens,
            "lr": self.cfg.optim.lr,
            "seed": self.cfg.seed,
            "data_train": self.cfg.data.train,
            "data_val": self.cfg.data.val,
            "data_fingerprint": self.data_fingerprint,
            "data_in_memory": self.train_in_memory,
            **self.plan.as_params(),
        }


#: CPUs a cluster must keep free for Ray Data: its read tasks ask for 0.5 (`shard_dataset`), but
#: it lists the shards, at the start of every epoch, in a task that asks for a whole CPU and that
#: Ray Data offers no setting for. With less free, the first batch never comes.
DATA_CPUS = 1.0


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
        cpus = ray.cluster_resources().get("CPU", 0.0)
        require_data_cpus(resources, cpus, runs_at_once)


def check_data(cfg: TrainConfig) -> None:
    """Refuse bad shards up front, naming every problem with its file and row."""
    deep = cfg.data.check == "full"
    shape = cfg.model.image_shape
    require_valid_split(cfg.data.train, cfg.data.val, expected_shape=shape, deep=deep)


def prepare(cfg: TrainConfig, resources: ResourcesConfig) -> PreparedRun:
    """Batch arithmetic and validation set size, checked; the data itself by `check_data`."""
    train, val = ShardSet(cfg.data.train), ShardSet(cfg.data.val)
    plan = make_plan(cfg, resources.workers)
    if train.num_rows < plan.world_size * plan.micro_batch_images:
        raise PlanError(
            f"data.train: {cfg.data.train} has {train.num_rows} images, fewer than one "
            f"micro-batch of {plan.micro_batch_images} for each of {plan.world_size} workers"
        )
    val_batches = min(cfg.eval_batches, val.num_rows // cfg.eval_batch_images)
    if val_batches < 1:
        raise PlanError(
            f"eval_batch_images: the validation set {cfg.data.val} has {val.num_rows} images, "
            f"fewer than one validation batch of {cfg.eval_batch_images}"
        )
    fingerprint = f"{train.fingerprint()}-{val.fingerprint()}"
    share_mb = train.num_rows / plan.world_size * math.prod(cfg.model.image_shape) / 2**20
    return PreparedRun(cfg, plan, val_batches, fingerprint, share_mb <= cfg.data.memory_mb)


#: Ray Train's controller takes each report off a one-slot queue only when it polls the workers
#: (every 2 s by default), and a worker's next report waits for that: measured 1.65 s per
#: checkpoint on a small CPU cell, against 0.03-0.05 s when it polls every 0.1 s. A value the
#: user sets in the environment wins.
CONTROLLER_POLL = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")


def build_trainer(
    run: PreparedRun,
    resources: ResourcesConfig,
    *,
    tracking: TrackingConfig,
    run_id: str,
    name: str,
    storage_path: str,
    max_failures: int = 2,
    callbacks: list | None = None,
    resume_from: str | None = None,
) -> TorchTrainer:
    """A `TorchTrainer` whose workers stream the shard sets and train with DeepSpeed."""
    os.environ.setdefault(*CONTROLLER_POLL)  # read by TorchTrainer.fit, passed to its controller
    job = WorkerJob(
        train=run.cfg,
        tracking_uri=tracking.uri,
        tracking_wait_s=tracking.final_wait_s,
        run_id=run_id,
        val_batches=run.val_batches,
        submitted_at=time.time(),
        resume_from=resume_from,
        keep_train_in_memory=run.train_in_memory,
        threads=resources.threads_per_worker or max(1, math.ceil(resources.cpus_per_worker)),
        run_dir=f"{absolute_uri(storage_path).rstrip('/')}/{name}",
    )
    per_worker = {"CPU": resources.cpus_per_worker}
    if resources.use_gpu:
        per_worker["GPU"] = resources.gpus_per_worker
    train = shard_dataset(run.cfg.data.train, shuffle_seed=run.cfg.seed)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=job.model_dump(mode="json"),
        scaling_config=ScalingConfig(
            num_workers=resources.workers,
            use_gpu=resources.use_gpu,
            resources_per_worker=per_worker,
        ),
        datasets={"train": train},
        run_config=RunConfig(
            name=name,
            storage_path=absolute_uri(storage_path),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=None if run.cfg.checkpoint_at else 2),
            callbacks=callbacks or [],
        ),
    )
