"""The per-worker training loop: stream, step, evaluate, checkpoint. Nothing else.

Ray Train runs `train_loop_per_worker` on every worker of a run (or, for a one-worker CPU run,
inside the calling process). Record keeping is rank 0's `Recorder`; checkpoints are the
`Checkpointer`'s; progress goes to the driver as heartbeats.
"""

from __future__ import annotations

import math
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import deepspeed
import ray.train
import torch
import torch.distributed as dist
from ray.train.torch import get_device

from astropt.compute import peak_flops
from astropt.data.pipeline import ImageStream, validation_batches
from astropt.heartbeat import Heartbeat, Phase
from astropt.model import AstroPT
from astropt.patches import images_to_tokens
from astropt.record import Metric, Tag
from astropt.train.checkpoint import Checkpointer
from astropt.train.engine import (
    align_schedule,
    build_engine,
    init_world_of_one,
    release_world_of_one,
)
from astropt.train.job import WorkerJob
from astropt.train.recorder import Recorder


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


def _mean_across_workers(total: torch.Tensor, count: float) -> float:
    """Mean of a per-worker sum over all workers (the same value on every rank)."""
    packed = torch.stack([total.double(), torch.tensor(count, device=total.device).double()])
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(packed)
    return (packed[0] / packed[1]).item()


def fp32_loss(engine: deepspeed.DeepSpeedEngine, tokens: torch.Tensor) -> torch.Tensor:
    """The model's Huber loss computed in float32 whatever the model's dtype: bf16 rounding of
    the loss (about 0.4% near 0.3) is coarser than what the scaling fit resolves."""
    predictions = engine(tokens.to(engine_dtype(engine)))
    return AstroPT.loss(predictions.float(), tokens[:, 1:].float())


def engine_dtype(engine: deepspeed.DeepSpeedEngine) -> torch.dtype:
    return torch.bfloat16 if engine.bfloat16_enabled() else torch.float32


class WorkerRun:
    """One worker's share of a run: its engine, its data streams, its checkpoints."""

    def __init__(self, job: WorkerJob) -> None:
        entered = time.time()
        self.job, self.cfg, self.plan = job, job.train, job.plan
        if job.in_process:  # Ray Train's context is Tune's in a trial's own process
            self.rank, world = 0, 1
        else:
            context = ray.train.get_context()
            self.rank, world = context.get_world_rank(), context.get_world_size()
        if world != self.plan.world_size:
            raise RuntimeError(f"the plan is for {self.plan.world_size} workers, not {world}")
        self.heartbeat = Heartbeat(job.board if self.rank == 0 else None, job.name, job.plan.steps)
        self.heartbeat(Phase.ENGINE_INIT)
        device = torch.device("cpu") if job.in_process else get_device()
        self.peak = (
            peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
        )
        torch.set_num_threads(job.threads)
        torch.manual_seed(self.cfg.seed)
        if job.in_process:
            init_world_of_one("gloo")
        self.recorder = Recorder(
            job.tracking_uri, job.run_id, job.run_dir, job.tracking_wait_s, self.rank == 0
        )
        self.checkpointer = Checkpointer(
            job.run_dir, self.rank, self.cfg.training.keep_checkpoints, self.cfg.keep_steps
        )
        model = AstroPT(self.cfg.model)
        self.engine = build_engine(model, self.cfg, self.plan, device.type == "cuda")
        engine_ready = time.time()
        restored = self.checkpointer.restore(self.engine, job.resume_from)
        self.step = restored.step
        align_schedule(self.engine, self.step)
        self.recorder.carry(restored.unsent)
        self.recorder.tag({Tag.NODE: ray.get_runtime_context().get_node_id()})
        self.heartbeat(Phase.FIRST_BATCH, self.step)
        with ThreadPoolExecutor(max_workers=1) as pool:
            val = pool.submit(
                validation_batches,
                job.val_uri,
                self.cfg.training.eval_batch_images,
                max(self.plan.val_batches, self.plan.final_val_batches),
            )
            self.stream = iter(self._image_stream(world))
            self.first = next(self.stream)
            self.val = val.result()
        self.recorder.add(
            self.step,
            {
                Metric.WORKER_START_S: entered - job.submitted_at,
                Metric.ENGINE_INIT_S: engine_ready - entered,
                Metric.FIRST_BATCH_S: time.time() - engine_ready,
            },
        )
        self.progress = Progress(
            self.cfg.training.divergence.spike_factor, self.cfg.training.divergence.min_steps
        )
        self.loss_sum = torch.zeros((), device=self.engine.device, dtype=torch.float64)
        self.steps_in_window = 0

    def _image_stream(self, world: int) -> ImageStream:
        return ImageStream(
            self.job.train_files,
            self.cfg.model.image.shape,
            self.plan.micro_batch_images,
            in_memory=self.plan.data_in_memory,
            seed=self.cfg.seed,
            rank=self.rank,
            world=world,
            start_batch=self.step * self.plan.grad_accum,
        )

    def _next_images(self) -> torch.Tensor:
        if self.first is not None:
            images, self.first = self.first, None
            return images
        return next(self.stream)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        on_device = images.to(self.engine.device, non_blocking=True)
        return images_to_tokens(on_device, self.cfg.model.image.patch_size)

    def train_step(self) -> None:
        """One optimizer step: grad_accum micro-batches, no host sync."""
        for _ in range(self.plan.grad_accum):
            loss = fp32_loss(self.engine, self.tokens(self._next_images()))
            self.engine.backward(loss)
            self.engine.step()
            self.loss_sum += loss.detach().double()
        self.step += 1
        self.steps_in_window += 1

    def log_point(self) -> bool:
        """Log train metrics since the last point; True if the run has diverged."""
        plan = self.plan
        loss = _mean_across_workers(self.loss_sum, self.steps_in_window * plan.grad_accum)
        seconds = self.progress.seconds_since_last()
        tokens_per_s = self.steps_in_window * plan.global_batch_tokens / max(seconds, 1e-9)
        metrics = {
            Metric.TRAIN_LOSS: loss,
            Metric.LR: self.engine.get_lr()[0],
            Metric.TOKENS_PER_S: tokens_per_s,
            **self.position(),
        }
        if self.peak is not None:
            flops = tokens_per_s * plan.flops_per_token_attention
            metrics[Metric.MFU] = flops / (self.peak * plan.world_size)
        self.recorder.add(self.step, metrics)
        self.heartbeat(Phase.TRAINING, self.step, loss, tokens_per_s)
        self.loss_sum.zero_()
        self.steps_in_window = 0
        return self.progress.diverged(self.step, loss)

    def position(self) -> dict[str, float]:
        """Tokens and epochs so far, logged beside every loss."""
        position = {Metric.TOKENS_SEEN: float(self.plan.tokens_at(self.step))}
        if (epochs := self.plan.epochs_at(self.step)) is not None:
            position[Metric.EPOCHS] = epochs
        return position

    def evaluate(self) -> float:
        """The validation loss, logged at this step (the curve's point)."""
        started = time.perf_counter()
        loss = self.validation_loss(self.plan.val_batches)
        self.recorder.add(
            self.step,
            {Metric.VAL_LOSS: loss, Metric.EVAL_S: time.perf_counter() - started} | self.position(),
        )
        return loss

    def validation_loss(self, batches: int) -> float:
        """Mean loss over the first `batches` fixed validation batches; each rank takes every
        world-th image."""
        world = self.plan.world_size
        total = torch.zeros((), device=self.engine.device, dtype=torch.float64)
        rows = 0
        self.engine.eval()
        with torch.no_grad():
            for images in self.val[:batches]:
                part = images[self.rank :: world]
                total += fp32_loss(self.engine, self.tokens(part)).double() * len(part)
                rows += len(part)
        self.engine.train()
        return _mean_across_workers(total, rows)

    def save(self) -> None:
        """Checkpoint (with the metric points MLflow lacks), then send those points. MLflow then
        only holds steps that a checkpoint covers: a restart neither repeats a step nor loses
        one, and a failed checkpoint leaves no orphan points behind."""
        started = time.perf_counter()
        self.checkpointer.save(self.engine, self.step, self.recorder.pending())
        self.recorder.flush()
        self.recorder.add(self.step, {Metric.CHECKPOINT_S: time.perf_counter() - started})

    def final_summary(self) -> dict[str, float]:
        """The last evaluation (on `final_eval_batches`; the curve gets its usual point too) and
        what the run amounts to, logged at its last step."""
        plan, compute = self.plan, self.plan.compute
        self.evaluate()
        summary = {
            Metric.FINAL_VAL_LOSS: self.validation_loss(plan.final_val_batches),
            Metric.FINAL_TOKENS_SEEN: float(plan.tokens_seen),
            Metric.FINAL_COMPUTE_6ND: compute.six_nd,
            Metric.FINAL_COMPUTE_ATTENTION: compute.attention,
        }
        if (epochs := plan.epochs_at(self.step)) is not None:
            summary[Metric.FINAL_EPOCHS] = epochs
        self.recorder.add(self.step, summary)
        return summary

    def final_state(self) -> dict[str, torch.Tensor]:
        """The full model state in float32 on the CPU (gathered from ZeRO-3 shards)."""
        params = list(self.engine.module.parameters())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            state = self.engine.module.state_dict()
            return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}

    def finish(self, finished: bool) -> None:
        """Export the weights, write what MLflow lacks (or spool it), release the engine."""
        self.heartbeat(Phase.FINISHING, self.step)
        if finished:
            state = self.final_state()
            self.recorder.export_weights(state, self.cfg.model)
            self.checkpointer.prune(self.step, keep_latest=1)  # nothing left to resume
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.recorder.add(self.step, {Metric.PEAK_RSS_MB: peak_rss_mb})
        self.recorder.close({Tag.STEPS_DONE: self.step})
        self.engine.destroy()


def train_loop_per_worker(config: dict) -> dict:
    """Train one model to its token budget; returns (rank 0's) outcome for the driver. A run in
    the calling process (`in_process`) releases its world of one however it ends."""
    job: WorkerJob = config["job"]
    if not job.in_process:
        return train(job)
    try:
        return train(job)
    finally:
        release_world_of_one()


def train(job: WorkerJob) -> dict:
    """A diverged run stops at once without a checkpoint, so its last good checkpoint stays the
    latest; its outcome says `diverged`."""
    run = WorkerRun(job)
    training, plan = run.cfg.training, run.plan
    if run.step == 0:
        run.evaluate()  # the untrained model's loss: where every curve starts
    run.heartbeat(Phase.TRAINING, run.step)
    summary = None
    while run.step < plan.steps:
        run.train_step()
        stall = training.stall_for_test
        if (
            stall
            and stall.size == run.cfg.model.name
            and run.step == stall.after_step
            and run.rank == 0
        ):
            time.sleep(stall.seconds)
        last = run.step == plan.steps
        if (run.step % training.log_every == 0 or last) and run.log_point():
            run.evaluate()
            run.finish(finished=False)
            return {"diverged": True, "step": run.step}
        if last:
            summary = run.final_summary()
        elif run.step % training.eval_every == 0:
            run.evaluate()
        if last or run.step % training.checkpoint_every == 0 or run.step in run.cfg.keep_steps:
            run.save()
    if summary is None:  # restarted after its last checkpoint: nothing left but the record
        summary = run.final_summary()
    run.finish(finished=True)
    return {"diverged": False, "step": run.step, **{str(k): v for k, v in summary.items()}}
