"""The processes of a local Ray cluster this project started: recorded, stopped, and found again
after a killed driver.

`ray.shutdown()` stops the processes `ray.init()` started, but not always all of them, and a
driver that dies without it (SIGKILL, an out-of-memory kill) leaves Ray's agents and workers
running with nothing to stop them. So each local cluster a driver starts is recorded in a state
file, `$XDG_CACHE_HOME/astropt/ray-local/<host>-<session>.json` (`~/.cache/...` by default): the
driver's PID and start time, the session folder, and the PIDs of the session's processes at
start. The next `connect` on the same host (since the same boot) reads each record whose driver
is gone and stops what is left of its session.

Which processes belong to a session is decided from the process itself, never from a PID alone
(PIDs are reused): its command line passes the session's name in a `--` flag (gcs_server,
raylet, Ray's Python daemons, a worker before it renames itself), or, for processes Ray renamed
`ray::...` (agents, workers), it holds a file of the session folder open (its log files).
Drivers (a `python-core-driver` log open) and this process are never counted: a program that
joined the cluster is not Ray's to stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

#: How long Ray's processes get to exit after SIGTERM before they get SIGKILL.
TERM_GRACE_S = 5.0


def state_dir() -> Path:
    """Where records of the local clusters this user's drivers started are kept."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "astropt" / "ray-local"


@dataclass(frozen=True)
class LocalSession:
    """A local Ray cluster that this process started, and the file that records it."""

    session_dir: Path
    record: Path

    @property
    def name(self) -> str:
        return self.session_dir.name


def belongs_to(process: psutil.Process, session_dir: Path) -> bool:
    """Whether `process` is one of Ray's processes of the session in `session_dir`."""
    try:
        if process.pid == os.getpid():
            return False
        cmdline = process.cmdline()
        if any(arg.startswith("--") and session_dir.name in arg for arg in cmdline):
            return True
        if not cmdline or not cmdline[0].startswith("ray::"):
            return False
        paths = [f.path for f in process.open_files()]
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    inside = [p for p in paths if p.startswith(f"{session_dir}{os.sep}")]
    is_driver = any(Path(p).name.startswith("python-core-driver-") for p in inside)
    return bool(inside) and not is_driver


def session_processes(session_dir: Path) -> list[psutil.Process]:
    """Every live process of the session (see `belongs_to`)."""
    return [p for p in psutil.process_iter() if belongs_to(p, session_dir)]


def _identity(process: psutil.Process) -> dict:
    return {"pid": process.pid, "started": process.create_time(), "name": process.name()}


def _still_running(identity: dict) -> psutil.Process | None:
    """The process recorded as `identity`, if it runs still (same PID, same start time)."""
    try:
        process = psutil.Process(identity["pid"])
        return process if process.create_time() == identity["started"] else None
    except psutil.NoSuchProcess:
        return None


def record_session(session_dir: Path) -> LocalSession:
    """Record the local cluster this process has just started (`ray.init`)."""
    session = LocalSession(
        session_dir, state_dir() / f"{socket.gethostname()}-{session_dir.name}.json"
    )
    record = {
        "host": socket.gethostname(),
        "boot_time": psutil.boot_time(),
        "driver": _identity(psutil.Process()),
        "session_dir": str(session_dir),
        "processes": [_identity(p) for p in session_processes(session_dir)],
    }
    session.record.parent.mkdir(parents=True, exist_ok=True)
    partial = session.record.with_suffix(".partial")
    partial.write_text(json.dumps(record, indent=1))
    partial.replace(session.record)
    return session


def stop_processes(processes: list[psutil.Process], force: bool = False) -> None:
    """SIGTERM, up to TERM_GRACE_S to exit, then SIGKILL; with `force`, SIGKILL at once."""
    _signal_all(processes, signal.SIGKILL if force else signal.SIGTERM)
    alive = _wait_gone(processes, 0 if force else TERM_GRACE_S)
    _signal_all(alive, signal.SIGKILL)
    _wait_gone(alive, TERM_GRACE_S)


def _signal_all(processes: list[psutil.Process], signum: int) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signum)


def _wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of `processes` still running after up to `timeout` s. An exited process that its
    parent has not reaped yet (a zombie: Ray's orphans wait for init) counts as gone."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in processes if _running(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_session(session: LocalSession, force: bool = False) -> None:
    """Stop every process left of `session` and forget it (after `ray.shutdown()`, or instead
    of it when forced)."""
    stop_processes(session_processes(session.session_dir), force=force)
    session.record.unlink(missing_ok=True)


def stop_leftover_sessions() -> list[str]:
    """Stop what is left of local clusters that drivers on this host started and died without
    stopping; one line per cluster that still had processes, to print."""
    lines = []
    for path in sorted(state_dir().glob(f"{socket.gethostname()}-*.json")):
        claimed = path.with_suffix(f".stopping-{os.getpid()}")
        try:
            record = json.loads(path.read_text())
            if _is_current(record):
                continue
            path.rename(claimed)  # one connect stops it, however many start at once
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        line = _stop_leftover(record) if _same_boot(record) else None
        claimed.unlink(missing_ok=True)
        if line:
            lines.append(line)
    return lines


def _is_current(record: dict) -> bool:
    """The record's driver runs still: its cluster is in use, not left over."""
    return _same_boot(record) and _still_running(record["driver"]) is not None


def _same_boot(record: dict) -> bool:
    """The machine has not restarted since the record was written (else nothing of it runs)."""
    return abs(record["boot_time"] - psutil.boot_time()) < 1


def _stop_leftover(record: dict) -> str | None:
    session_dir = Path(record["session_dir"])
    recorded = [_still_running(identity) for identity in record["processes"]]
    found = {p.pid: p for p in recorded if p is not None and belongs_to(p, session_dir)}
    found |= {p.pid: p for p in session_processes(session_dir)}
    if not found:
        return None
    labels = sorted({_label(p) for p in found.values()})
    stop_processes(list(found.values()))
    return (
        f"stopped {len(found)} leftover processes ({', '.join(labels)}) of the local Ray cluster "
        f"{session_dir.name}, which an earlier run (PID {record['driver']['pid']}) started and "
        "died without stopping"
    )


def _label(process: psutil.Process) -> str:
    """`ray::DashboardAgent`, `raylet`, `log_monitor.py`: what a user would look for in `ps`."""
    try:
        cmdline = process.cmdline()
        name = process.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "?"
    if cmdline and cmdline[0].startswith("ray::"):
        return cmdline[0].split(" ")[0]
    scripts = [Path(arg).name for arg in cmdline if arg.endswith(".py")]
    return scripts[-1] if scripts else name
