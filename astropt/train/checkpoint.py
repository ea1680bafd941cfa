"""DeepSpeed checkpoints through Ray Train: every rank saves its shard, Ray stores them together."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping

import deepspeed
import ray.train
import torch.distributed as dist
from ray.train import Checkpoint

from astropt.data.schema import resolve

TAG = "astropt"
READY = "ready"
log = logging.getLogger(__name__)


def folder_name(step: int) -> str:
    """The checkpoint's folder in the run's storage: named by step, so others can find it."""
    return f"step_{step:09d}"


class CheckpointWriteError(OSError):
    """A checkpoint could not be written. The previous one is untouched: Ray registers a
    checkpoint only after every rank's upload succeeded, and branch markers follow that."""


#: Metric points carried in a checkpoint, as (key, value, timestamp ms, step).
Points = list[tuple[str, float, int, int]]


def save_and_report(
    engine: deepspeed.DeepSpeedEngine,
    step: int,
    metrics: Mapping[str, float],
    run_dir: str,
    unsent: Points,
) -> None:
    """Save this rank's shard of the state at `step`, with the metric points `unsent` to MLflow
    so far, and report it to Ray with `metrics`.

    The shard is staged in a local temporary folder, then Ray copies it to
    `run_dir/step_<step>`. A failed write removes that partial folder and names it.
    """
    target = f"{run_dir}/{folder_name(step)}"
    with tempfile.TemporaryDirectory(prefix="astropt-ckpt-") as tmp:
        try:
            engine.save_checkpoint(tmp, tag=TAG, client_state={"step": step, "unsent": unsent})
        except (OSError, RuntimeError) as error:
            raise _write_error(step, f"its local staging folder {tmp}", error) from error
        try:
            ray.train.report(
                dict(metrics),
                checkpoint=Checkpoint.from_directory(tmp),
                checkpoint_dir_name=folder_name(step),
            )
        except OSError as error:
            _remove_partial(target)
            raise _write_error(step, target, error) from error


def _write_error(step: int, where: str, error: BaseException) -> CheckpointWriteError:
    return CheckpointWriteError(
        f"the checkpoint of step {step} could not be written to {where}: {error}. "
        "The previous checkpoint is intact: free space or make the storage writable, then run "
        "the same command again to resume from it"
    )


def _remove_partial(target: str) -> None:
    try:
        fs, path = resolve(target)
        fs.delete_dir(path)
    except FileNotFoundError:  # nothing was written
        pass
    except OSError as error:  # the storage refuses even this: say so, the write error matters more
        log.warning("could not remove the partial checkpoint %s: %s", target, error)


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


def restore(engine: deepspeed.DeepSpeedEngine, start_from: str | None = None) -> tuple[int, Points]:
    """Load this run's latest reported checkpoint, else the one at `start_from` (another run's,
    e.g. a trunk to branch from), else nothing.

    Returns the optimizer steps done and the metric points that checkpoint carries for this
    run's MLflow record (none from another run's checkpoint).
    """
    checkpoint, own = ray.train.get_checkpoint(), True
    if checkpoint is None and start_from is not None:
        checkpoint, own = Checkpoint(start_from), False
    if checkpoint is None:
        return 0, []
    with checkpoint.as_directory() as folder:
        path, client_state = engine.load_checkpoint(folder, tag=TAG)
    if path is None:
        raise RuntimeError(f"checkpoint {checkpoint.path} holds no DeepSpeed state tagged {TAG}")
    return int(client_state["step"]), list(client_state.get("unsent", [])) if own else []
