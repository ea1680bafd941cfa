"""Checkpoints of a run in its storage folder: the one owner of saving, finding and loading them.

A checkpoint is `<run_dir>/step_<step>/`: every rank's DeepSpeed files (ZeRO shards are named by
rank), and `COMPLETE`, written by rank 0 once every rank's files are stored. Only complete
checkpoints are ever loaded, so a save that dies half way leaves nothing to trip over. After
each save rank 0 keeps the newest `keep_latest` complete checkpoints and every step in
`keep_steps` (branch points), and deletes the rest.

The same code serves a Ray Train worker group and a run in one process (Ray Train's local mode
keeps no checkpoints itself): a restarted worker group, a re-run after a killed driver and a
branch all find their checkpoint here.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import deepspeed
import torch.distributed as dist

from astropt import storage

TAG = "astropt"
COMPLETE = "COMPLETE"
PREFIX = "step_"
log = logging.getLogger(__name__)

#: Metric points carried in a checkpoint, as (key, value, timestamp ms, step).
Points = list[tuple[str, float, int, int]]


def folder_name(step: int) -> str:
    """The checkpoint's folder in the run's storage: named by step, so others can find it."""
    return f"{PREFIX}{step:09d}"


def path_of(run_dir: str, step: int) -> str:
    return storage.join(run_dir, folder_name(step))


def is_complete(run_dir: str, step: int) -> bool:
    return storage.exists(storage.join(path_of(run_dir, step), COMPLETE))


def complete_steps(run_dir: str) -> list[int]:
    """Steps of the run's complete checkpoints, oldest first."""
    steps = [int(name.removeprefix(PREFIX)) for name in storage.list_folders(run_dir, PREFIX)]
    return [step for step in sorted(steps) if is_complete(run_dir, step)]


class CheckpointWriteError(OSError):
    """A checkpoint could not be written. The previous one is untouched and stays the one a
    re-run resumes from."""


@dataclass(frozen=True)
class Restored:
    step: int
    unsent: Points


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


@dataclass(frozen=True)
class Checkpointer:
    run_dir: str
    rank: int
    keep_latest: int
    keep_steps: Sequence[int] = ()

    def save(self, engine: deepspeed.DeepSpeedEngine, step: int, unsent: Points) -> None:
        """Store this rank's shard of the state at `step`, with the metric points not yet in
        MLflow; rank 0 marks it complete once every rank's files are stored. The shard is
        staged in a local temporary folder and copied (to a folder or an object store)."""
        target = path_of(self.run_dir, step)
        state = {"step": step, "unsent": unsent}
        try:
            with tempfile.TemporaryDirectory(prefix="astropt-ckpt-") as tmp:
                engine.save_checkpoint(tmp, tag=TAG, client_state=state)
                storage.copy_folder(tmp, target)
        except (OSError, RuntimeError) as error:
            self._remove_partial(target)
            raise CheckpointWriteError(
                f"the checkpoint of step {step} could not be written to {target}: {error}. "
                "The previous checkpoint is intact: free space or make the storage writable, "
                "then run the same command again to resume from it"
            ) from error
        _barrier()
        if self.rank == 0:
            storage.touch(storage.join(target, COMPLETE), str(step))
            self.prune(step, self.keep_latest)
        _barrier()

    def prune(self, newest: int, keep_latest: int) -> None:
        """Delete complete checkpoints beyond the newest `keep_latest` (branch points stay) and
        any incomplete one older than `newest` (rank 0). A finished run keeps its last only."""
        if self.rank != 0:
            return
        done = complete_steps(self.run_dir)
        keep = set(done[-keep_latest:]) | set(self.keep_steps)
        names = storage.list_folders(self.run_dir, PREFIX)
        for step in (int(name.removeprefix(PREFIX)) for name in names):
            stale_partial = step < newest and step not in done
            if (step in done and step not in keep) or stale_partial:
                storage.remove(path_of(self.run_dir, step))

    def _remove_partial(self, target: str) -> None:
        try:
            storage.remove(target)
        except OSError as error:  # the storage refuses even this: the write error matters more
            log.warning("could not remove the partial checkpoint %s: %s", target, error)

    def restore(self, engine: deepspeed.DeepSpeedEngine, start_from: str | None) -> Restored:
        """Load the run's newest complete checkpoint, else the complete checkpoint folder
        `start_from` (another run's, e.g. a trunk's branch point), else nothing.

        Returns the optimizer steps done and the metric points that checkpoint carries for this
        run's MLflow record (none from another run's checkpoint)."""
        own = complete_steps(self.run_dir)
        if own:
            folder = path_of(self.run_dir, own[-1])
        elif start_from is not None:
            folder = start_from
        else:
            return Restored(0, [])
        state = _load(engine, folder)
        return Restored(int(state["step"]), list(state.get("unsent", [])) if own else [])


def _load(engine: deepspeed.DeepSpeedEngine, folder: str) -> dict:
    if storage.is_local(folder):
        path, state = engine.load_checkpoint(storage.resolve(folder)[1], tag=TAG)
    else:
        with tempfile.TemporaryDirectory(prefix="astropt-ckpt-") as tmp:
            storage.copy_folder(folder, tmp)
            path, state = engine.load_checkpoint(tmp, tag=TAG)
    if path is None:
        raise RuntimeError(f"checkpoint {folder} holds no DeepSpeed state tagged {TAG}")
    return state
