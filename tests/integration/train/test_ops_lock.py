"""No op build holds an engine start: DeepSpeed's CPU op is not built, and a killed build's lock
is cleared with a warning naming it, while a live build's lock is left alone."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from astropt.train.ops import LOCK_GRACE_S, clear_stale_build_locks, skip_unused_ops

OP = "deepspeed_shm_comm"

#: The project's engine start, as a Ray Train worker makes it: a world of one, a tiny engine.
ENGINE_START = textwrap.dedent(
    """
    import deepspeed
    from astropt.config import DataConfig, ModelConfig, TrainConfig, TrainingConfig
    from astropt.model import AstroPT
    from astropt.train.engine import build_engine, init_world_of_one
    from astropt.train.plan import DataFacts, make_plan

    init_world_of_one("gloo")
    cfg = TrainConfig(
        model=ModelConfig(n_layer=1, n_head=2, n_embd=32, image_size=32),
        data=DataConfig(train="unused/train", val="unused/val"),
        tokens=4 * 16 * 3,
        training=TrainingConfig(global_batch_tokens=16 * 3, micro_batch_images=8, lr=1e-3),
    )
    plan = make_plan(cfg, world_size=1, data=DataFacts(None, None))
    engine = build_engine(AstroPT(cfg.model), cfg, plan, bf16=False)
    print("engine ready; shm op loaded:", deepspeed.comm.comm.cdb.shm_comm_op is not None)
    engine.destroy()
    """
)


def _engine_start(extensions: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(extensions), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", ENGINE_START], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def _wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_killed_op_build_does_not_hold_up_the_next_engine_start(tmp_path):
    """A first start killed 3 s into DeepSpeed's op build: the next engine start finishes
    (it builds nothing) while the build's orphaned compiler still runs, and once that is gone
    too, the next one removes the dead lock, naming it."""
    extensions = tmp_path / "torch_extensions"
    lock = extensions / OP / "lock"
    build = subprocess.Popen(
        [sys.executable, "-c", "from deepspeed.comm.torch import build_shm_op; build_shm_op()"],
        env=dict(os.environ, TORCH_EXTENSIONS_DIR=str(extensions)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for(lock, timeout=120)
        time.sleep(3)
        build.send_signal(signal.SIGKILL)  # the builder only: its ninja and compiler live on
        build.wait()

        first = _engine_start(extensions)
        assert first.returncode == 0, first.stderr[-3000:]
        assert "engine ready; shm op loaded: False" in first.stdout

        _kill_session(build.pid)  # the orphaned ninja and compilers too, if still compiling
        assert lock.exists()
        second = _engine_start(extensions)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "engine ready; shm op loaded: False" in second.stdout
        assert f"removed the stale build lock {lock}" in second.stderr
        assert not lock.exists()
    finally:
        _kill_session(build.pid)


def _kill_session(sid: int) -> None:
    """Every process of session `sid` (ninja runs each compiler in a process group of its own)."""
    for process in psutil.process_iter():
        with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
            if os.getsid(process.pid) == sid:
                process.kill()


def _lock(tmp_path: Path, wrote_ninja: bool) -> Path:
    """A build folder of torch's layout with a lock; build.ninja written after it or not."""
    folder = tmp_path / "py311_cpu" / OP
    folder.mkdir(parents=True)
    lock = folder / "lock"
    lock.touch()
    if wrote_ninja:
        (folder / "build.ninja").write_text("# the builder's\n")
    return lock


def test_a_lock_is_kept_while_a_process_works_in_its_build_folder(tmp_path):
    lock = _lock(tmp_path, wrote_ninja=True)
    compiler = subprocess.Popen(["sleep", "60"], cwd=lock.parent)
    try:
        assert clear_stale_build_locks(tmp_path) == []
        assert lock.exists()
    finally:
        compiler.kill()
        compiler.wait()
    with pytest.warns(UserWarning, match=re.escape(f"removed the stale build lock {lock}")):
        assert clear_stale_build_locks(tmp_path) == [lock]
    assert not lock.exists()


def test_a_young_lock_before_its_compiler_started_is_kept(tmp_path):
    lock = _lock(tmp_path, wrote_ninja=False)
    assert clear_stale_build_locks(tmp_path) == []
    old = time.time() - LOCK_GRACE_S - 1
    os.utime(lock, (old, old))
    with pytest.warns(UserWarning, match="removed the stale build lock"):
        assert clear_stale_build_locks(tmp_path) == [lock]


def test_deepspeed_builds_no_op_after_skip_unused_ops(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    from deepspeed.comm.torch import build_shm_op

    skip_unused_ops()
    assert build_shm_op() is None
    assert list(tmp_path.iterdir()) == []
