"""The per-worker training loop that Ray Train runs on every worker of a run."""

from __future__ import annotations

import itertools
import logging
import math
import os
import resource
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import deepspeed
import ray.train
import torch
import torch.distributed as dist
from mlflow.entities import Metric
from ray.train.torch import get_device
from safetensors.torch import save_file

from astropt.config import StrictModel, TrainConfig
from astropt.data.pipeline import ImageStream, validation_batches
from astropt.model import AstroPT
from astropt.patches import images_to_tokens
from astropt.spool import copy_folder, write_spool
from astropt.tracking import MetricBuffer, logged_through, make_client, set_tags
from astropt.train import checkpoint
from astropt.train.engine import build_engine
from astropt.train.plan import make_plan

FIRST_RETRY_WAIT_S = 5.0  # then doubling, until the run's tracking.final_wait_s is spent
#: Short MLflow HTTP retries in workers: a server that is away must not stall training for minutes.
MLFLOW_WORKER_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
log = logging.getLogger(__name__)

#: Dense bf16 peak FLOP/s by GPU name (vendor datasheets), for MFU; unknown devices get none.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12}


class WorkerJob(StrictModel):
    """Everything a worker needs, sent by the driver as the train loop config.

    `run_dir` is the run's folder in Ray storage: checkpoints, branch-point markers and the
    MLflow spool live there.
    """

    train: TrainConfig
    tracking_uri: str
    tracking_wait_s: float
    run_id: str
    val_batches: int
    submitted_at: float = 0.0
    run_dir: str
    resume_from: str | None = None
    keep_train_in_memory: bool = False
    threads: int = 1

    @property
    def spool_uri(self) -> str:
        return f"{self.run_dir}/mlflow-spool"


@dataclass
class Progress:
    """Loss and throughput bookkeeping between log points, and the divergence test."""

    spike_factor: float
    min_steps: int
    best: float = math.inf
    since: float = field(default_factory=time.perf_counter)

    def diverged(self, step: int, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        if step >= self.min_steps and loss > self.spike_factor * self.best:
            return True
        self.best = min(self.best, loss)
        return False

    def seconds_since_last(self) -> float:
        now = time.perf_counter()
        elapsed, self.since = now - self.since, now
        return elapsed


def _peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


def _mean_across_workers(total: torch.Tensor, count: float) -> float:
    """Mean of a per-worker sum over all workers (the same value on every rank)."""
    packed = torch.stack([total.float(), torch.tensor(count, device=total.device)])
    if dist.is_initialized():
        dist.all_reduce(packed)
    return (packed[0] / packed[1]).item()


def _validation_loss(
    engine: deepspeed.DeepSpeedEngine, batches: list[torch.Tensor], patch: int, dtype: torch.dtype
) -> float:
    """Mean loss over the fixed validation batches; each rank takes every world-th image."""
    rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    total = torch.zeros((), device=engine.device)
    rows = 0
    engine.eval()
    with torch.no_grad():
        for images in batches:
            part = images[rank::world].to(engine.device)
            _, loss = engine(images_to_tokens(part, patch).to(dtype))
            total += loss.float() * len(part)
            rows += len(part)
    engine.train()
    return _mean_across_workers(total, rows)


def _export_weights(engine: deepspeed.DeepSpeedEngine, job: WorkerJob, rank: int) -> None:
    """safetensors weights plus their config, logged to the run's `model/` artifacts (or, if
    MLflow cannot take them, kept beside the spool for the user to log)."""
    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        if rank != 0:
            return
        state = {
            k: v.detach().float().cpu().contiguous() for k, v in engine.module.state_dict().items()
        }
        with tempfile.TemporaryDirectory() as tmp:
            save_file(state, Path(tmp) / "model.safetensors")
            (Path(tmp) / "config.json").write_text(job.train.model.model_dump_json(indent=2))
            try:
                make_client(job.tracking_uri).log_artifacts(job.run_id, tmp, artifact_path="model")
            except Exception as error:
                kept = copy_folder(tmp, f"{job.spool_uri}/{job.run_id}-model")
                log.error("weights not logged to MLflow (%s); kept in %s", error, kept)


def _as_tuple(metric: Metric) -> tuple[str, float, int, int]:
    return metric.key, metric.value, metric.timestamp, metric.step


class WorkerRun:
    """One worker's share of a run: its engine, its data streams and (rank 0) its MLflow log."""

    def __init__(self, job: WorkerJob) -> None:
        entered = time.time()
        for key, value in MLFLOW_WORKER_ENV.items():
            os.environ.setdefault(key, value)
        self.job, self.cfg = job, job.train
        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.plan = make_plan(self.cfg, context.get_world_size())
        device = get_device()
        self.dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.peak = _peak_flops(device)
        torch.set_num_threads(job.threads)
        torch.manual_seed(self.cfg.seed)
        stream = iter(self._image_stream())
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(next, stream)  # Ray Data starts streaming while DeepSpeed starts
            self.engine = build_engine(
                AstroPT(self.cfg.model), self.cfg, self.plan, device.type == "cuda"
            )
            engine_ready = time.time()
            self.step, unsent = checkpoint.restore(self.engine, job.resume_from)
            self.buffer = self._metric_buffer() if self.rank == 0 else None
            if self.buffer is not None:
                self.buffer.add_points(Metric(*point) for point in unsent)
                self._tag_node()
            self.latest: dict[str, float] = {}
            self.val = validation_batches(
                self.cfg.data.val, self.cfg.eval_batch_images, job.val_batches
            )
            self.stream = itertools.chain([first.result()], stream)
        self.log(
            self.step,
            {
                "time/worker_start_s": entered - job.submitted_at,
                "time/engine_init_s": engine_ready - entered,
                "time/first_batch_s": time.time() - engine_ready,
            },
        )
        self.progress = Progress(self.cfg.divergence.spike_factor, self.cfg.divergence.min_steps)
        self.loss_sum = torch.zeros((), device=self.engine.device)
        self.steps_in_window = 0

    def _image_stream(self) -> ImageStream:
        return ImageStream(
            ray.train.get_dataset_shard("train"),
            self.cfg.model.image_shape,
            self.plan.micro_batch_images,
            keep_in_memory=self.job.keep_train_in_memory,
            seed=self.cfg.seed,
            rank=self.rank,
        )

    def _metric_buffer(self) -> MetricBuffer:
        client = make_client(self.job.tracking_uri)
        return MetricBuffer(client, self.job.run_id, logged_through(client, self.job.run_id))

    def _tag_node(self) -> None:
        """Tag the node rank 0 runs on now (a restarted run may move); MLflow down only warns."""
        try:
            node = ray.get_runtime_context().get_node_id()
            set_tags(self.buffer.client, self.job.run_id, {"astropt.node_id": node})
        except Exception as error:
            log.warning("MLflow: node tag not written (%s)", error)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Buffer for MLflow (rank 0) and keep as the latest values reported to Ray."""
        self.latest |= metrics
        if self.buffer is not None:
            self.buffer.add(step, metrics)

    @property
    def tokens_seen(self) -> int:
        return self.step * self.plan.global_batch_tokens

    def train_step(self) -> None:
        """One optimizer step: grad_accum micro-batches, no host sync."""
        for _ in range(self.plan.grad_accum):
            images = next(self.stream).to(self.engine.device, non_blocking=True)
            tokens = images_to_tokens(images, self.cfg.model.patch_size).to(self.dtype)
            _, loss = self.engine(tokens)
            self.engine.backward(loss)
            self.engine.step()
            self.loss_sum += loss.detach().float()
        self.step += 1
        self.steps_in_window += 1

    def log_point(self) -> bool:
        """Log train metrics since the last point; True if the run has diverged."""
        plan = self.plan
        loss = _mean_across_workers(self.loss_sum, self.steps_in_window * plan.grad_accum)
        seconds = self.progress.seconds_since_last()
        tokens_per_s = self.steps_in_window * plan.global_batch_tokens / max(seconds, 1e-9)
        metrics = {
            "train/loss": loss,
            "lr": self.engine.get_lr()[0],
            "tokens_seen": float(self.tokens_seen),
            "tokens_per_s": tokens_per_s,
        }
        if self.peak is not None:
            metrics["mfu"] = tokens_per_s * plan.flops_per_token / (self.peak * plan.world_size)
        self.log(self.step, metrics)
        self.loss_sum.zero_()
        self.steps_in_window = 0
        return self.progress.diverged(self.step, loss)

    def evaluate(self) -> float:
        started = time.perf_counter()
        loss = _validation_loss(self.engine, self.val, self.cfg.model.patch_size, self.dtype)
        self.log(
            self.step,
            {
                "val/loss": loss,
                "tokens_seen": float(self.tokens_seen),
                "time/eval_s": time.perf_counter() - started,
            },
        )
        return loss

    def save(self) -> None:
        """Checkpoint (with the metric points MLflow lacks) and report to Ray, then send those
        points. MLflow then only holds steps that a checkpoint covers: a restart neither repeats
        a step nor loses one, and a failed checkpoint leaves no orphan points behind."""
        started = time.perf_counter()
        unsent = [] if self.buffer is None else [_as_tuple(m) for m in self.buffer.pending]
        checkpoint.save_and_report(
            self.engine, self.step, {"step": self.step, **self.latest}, self.job.run_dir, unsent
        )
        if self.buffer is not None:
            self.buffer.flush()
        self.log(self.step, {"time/checkpoint_s": time.perf_counter() - started})  # sent next

    def finish(self, status: str) -> None:
        """Export the weights, write what MLflow lacks (or spool it), release the engine."""
        if status == "finished":
            _export_weights(self.engine, self.job, self.rank)
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.log(self.step, {"peak_rss_mb": peak_rss_mb})
        if self.buffer is not None:
            tags = {
                "astropt.status": status,
                "astropt.steps_done": self.step,
                "astropt.node_id": ray.get_runtime_context().get_node_id(),  # rank 0's node
            }
            self._commit(tags)
        self.engine.destroy()

    def _commit(self, tags: dict[str, object]) -> None:
        deadline = time.monotonic() + self.job.tracking_wait_s
        wait = FIRST_RETRY_WAIT_S
        while True:
            if self.buffer.flush():
                try:
                    set_tags(self.buffer.client, self.job.run_id, tags)
                    return
                except Exception as error:  # the server went away between the two writes
                    log.warning("MLflow tags not written: %s", error)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(wait, remaining))
            wait *= 2
        path = write_spool(self.job.spool_uri, self.job.run_id, self.buffer.pending, tags)
        log.error(
            "MLflow unreachable: %d metric points and the run's tags kept in %s; send them with "
            "`python -m astropt.spool upload %s --tracking-uri URI`",
            len(self.buffer.pending), path, self.job.spool_uri,
        )  # fmt: skip


def train_loop_per_worker(config: dict) -> None:
    """Train one model to its token budget; rank 0 records the run in MLflow.

    A diverged run stops at once without a checkpoint, so its last good checkpoint stays the
    latest; it is reported with `diverged=1` and tagged `diverged` in MLflow.
    """
    run = WorkerRun(WorkerJob.model_validate(config))
    cfg, plan = run.cfg, run.plan
    if run.step == 0:
        run.evaluate()  # the untrained model's loss: where every curve starts
    while run.step < plan.steps:
        run.train_step()
        last = run.step == plan.steps
        if (run.step % cfg.log_every == 0 or last) and run.log_point():
            run.evaluate()
            run.finish("diverged")
            ray.train.report({"step": run.step, "diverged": 1.0})
            return
        if last:
            final = {"final/val_loss": run.evaluate(), "final/tokens_seen": float(run.tokens_seen)}
            run.log(run.step, final)
        elif run.step % cfg.eval_every == 0:
            run.evaluate()
        if last or run.step % cfg.checkpoint_every == 0 or run.step in cfg.checkpoint_at:
            run.save()
        if run.step in cfg.checkpoint_at:
            checkpoint.mark_ready(run.job.run_dir, run.step)
    run.finish("finished")
