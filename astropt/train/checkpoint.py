"""DeepSpeed checkpoints through Ray Train: every rank saves its shard, Ray stores them together."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping

import deepspeed
import ray.train
import torch.distributed as dist
from ray.train import Checkpoint

from astropt.data.schema import resolve

TAG = "astropt"
READY = "ready"


def folder_name(step: int) -> str:
    """The checkpoint's folder in the run's storage: named by step, so others can find it."""
    return f"step_{step:09d}"


def save_and_report(
    engine: deepspeed.DeepSpeedEngine, step: int, metrics: Mapping[str, float]
) -> None:
    """Save this rank's shard of the state at `step` and report it with `metrics`."""
    with tempfile.TemporaryDirectory(prefix="astropt-ckpt-") as tmp:
        engine.save_checkpoint(tmp, tag=TAG, client_state={"step": step})
        ray.train.report(
            dict(metrics),
            checkpoint=Checkpoint.from_directory(tmp),
            checkpoint_dir_name=folder_name(step),
        )


def mark_ready(run_dir: str, step: int) -> None:
    """After every rank has stored its shard, flag the checkpoint as complete for branches."""
    if dist.is_initialized():
        dist.barrier()
    if ray.train.get_context().get_world_rank() == 0:
        fs, folder = resolve(f"{run_dir}/{READY}")
        fs.create_dir(folder, recursive=True)
        with fs.open_output_stream(f"{folder}/{folder_name(step)}"):
            pass


def ready_path(run_dir: str, step: int) -> str:
    return f"{run_dir}/{READY}/{folder_name(step)}"


def restore(engine: deepspeed.DeepSpeedEngine, start_from: str | None = None) -> int:
    """Load this run's latest reported checkpoint, else the one at `start_from` (another run's,
    e.g. a trunk to branch from), else nothing; return the optimizer steps it had done."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and start_from is not None:
        checkpoint = Checkpoint(start_from)
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        path, client_state = engine.load_checkpoint(folder, tag=TAG)
    if path is None:
        raise RuntimeError(f"checkpoint {checkpoint.path} holds no DeepSpeed state tagged {TAG}")
    return int(client_state["step"])
