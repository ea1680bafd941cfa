"""DeepSpeed's C++ ops: the project builds none, and a dead build's lock is cleared.

DeepSpeed compiles its ops with torch's extension builder, which guards each op's build folder
with a `lock` file (torch's FileBaton) and makes every later build of that op wait, with no time
limit and no message, until the file goes. A build killed while it holds the lock (Ctrl-C, an
out-of-memory kill, a preempted node) leaves the file, and every later start waits forever.

On CPU, DeepSpeed's communication backend builds `deepspeed_shm_comm` whenever a process group
starts (`deepspeed.comm.torch.build_shm_op`), yet only `inference_all_reduce` (tensor-parallel
inference) uses it; training all-reduces through torch.distributed. So the project marks it
incompatible, in DeepSpeed's cached compatibility table, before any process group starts: no
build, no lock, no first-start minute (measured in benchmarks/deepspeed_ops.py).
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import psutil

#: A lock this young, whose builder has not written its build.ninja yet, may belong to a build
#: that is still preparing to start its compiler.
LOCK_GRACE_S = 10.0
#: The pause between the two looks for a lock's builder: its builder removes the lock as soon
#: as ninja exits, so a lock that stays ownerless this long after that is dead.
SECOND_LOOK_S = 2.0


def skip_unused_ops() -> None:
    """Keep DeepSpeed from building `deepspeed_shm_comm`; call before `deepspeed.initialize` or
    `deepspeed.init_distributed` in every process that starts an engine.

    `deepspeed.ops.__compatible_ops__` is computed on first access and cached in the module, and
    DeepSpeed keeps edits to it. Accelerators without the op (CUDA) have nothing to skip, and
    their table is left unprobed, as DeepSpeed itself would leave it.
    """
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None:
        deepspeed.ops.__compatible_ops__[builder.NAME] = False


def extensions_root() -> Path:
    """Where torch builds extensions: TORCH_EXTENSIONS_DIR, else its per-user cache folder."""
    from torch.utils.cpp_extension import get_default_build_root

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())


def build_locks(root: Path | None = None) -> list[Path]:
    """Every op build lock under `root`: `<root>/<op>/lock` when TORCH_EXTENSIONS_DIR is set,
    `<root>/<python>_<accelerator>/<op>/lock` in torch's default folder."""
    root = root or extensions_root()
    return sorted([*root.glob("*/lock"), *root.glob("*/*/lock")])


def builders_of(build_dir: Path) -> list[psutil.Process]:
    """Live processes working in `build_dir`: torch runs ninja there, and ninja the compiler.
    Processes whose working folder this user may not read are not seen."""
    inside = str(build_dir.resolve())
    found = []
    for process in psutil.process_iter():
        try:
            cwd = process.cwd()
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if cwd == inside or cwd.startswith(inside + os.sep):
            found.append(process)
    return found


def is_stale(lock: Path) -> bool:
    """Whether `lock` is a dead build's: this user's, with no live process working in its build
    folder at two looks SECOND_LOOK_S apart (the lock unchanged between them), and either past
    its compiler start (build.ninja written after the lock) or older than LOCK_GRACE_S.

    torch's lock records no owner. Its builder creates it, writes build.ninja when that changed,
    runs ninja (and ninja the compiler) in the build folder, and removes the lock the moment
    ninja exits; the second look and the grace period cover the moments around the compiler.
    Builds by other users, or on other machines sharing the folder (a network home), are not
    visible: their locks are never called stale. Keep TORCH_EXTENSIONS_DIR on local disk.
    """
    try:
        first = lock.stat()
    except FileNotFoundError:
        return False
    if first.st_uid != os.getuid() or not _past_grace(lock, first.st_mtime):
        return False
    if builders_of(lock.parent):
        return False
    time.sleep(SECOND_LOOK_S)
    try:
        second = lock.stat()
    except FileNotFoundError:
        return False
    unchanged = (second.st_ino, second.st_mtime) == (first.st_ino, first.st_mtime)
    return unchanged and not builders_of(lock.parent)


def _past_grace(lock: Path, locked_at: float) -> bool:
    """The lock's builder got as far as its compiler, or has held it for LOCK_GRACE_S."""
    ninja = lock.parent / "build.ninja"
    wrote_ninja = ninja.exists() and ninja.stat().st_mtime >= locked_at
    return wrote_ninja or time.time() - locked_at >= LOCK_GRACE_S


def clear_stale_build_locks(root: Path | None = None) -> list[Path]:
    """Remove every stale op build lock under `root` (default: torch's extensions folder), with
    a warning naming each; locks of live builds are left alone. Returns the removed locks."""
    cleared = []
    for lock in build_locks(root):
        if not is_stale(lock):
            continue
        try:
            lock.unlink()
        except FileNotFoundError:
            continue
        warnings.warn(
            f"removed the stale build lock {lock}: the build that held it is gone, and every "
            "later build of this op would have waited on it forever",
            stacklevel=2,
        )
        cleared.append(lock)
    return cleared


def prepare_deepspeed_ops() -> None:
    """Before an engine starts: no op the project does not use gets built, and no dead build's
    lock is left for anything to wait on."""
    skip_unused_ops()
    clear_stale_build_locks()
