"""Connecting to Ray: a running cluster when there is one, else a local one sized for this box."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import ray

#: A custom resource that Tune trial drivers claim instead of CPUs: a trial driver only waits on
#: its workers, and letting it hold a CPU starves them on small machines (2 cores hang).
TRIAL_DRIVER = "trial_driver"
#: For the jobs of a local cluster: no machine of it can be preempted, so Ray Train's preemption
#: watcher (one more actor process per run, about 2 CPU-seconds on 2 cores) has nothing to watch.
LOCAL_JOB_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


@dataclass(frozen=True)
class Connection:
    """Where this process runs Ray: a line for the user, and whether it started the cluster
    itself (a fixed-size local one, which unlike an autoscaling cluster cannot grow)."""

    description: str
    started_local: bool = False

    def __str__(self) -> str:
        return self.description

    def shutdown(self) -> None:
        ray.shutdown()


def connect(address: str | None = None, *, num_cpus: int | None = None) -> Connection:
    """`ray.init` to `address` (or RAY_ADDRESS, or a cluster started with `ray start`), else
    start a local cluster; `address="local"` always starts a new local one."""
    if ray.is_initialized():
        return Connection("already connected")
    target = address or os.environ.get("RAY_ADDRESS")
    if target == "local":
        target = None
    elif target is None:
        try:
            ray.init(address="auto", log_to_driver=False)
            return Connection("connected to the running Ray cluster")
        except ConnectionError:
            pass
    else:
        ray.init(address=target, log_to_driver=False)
        return Connection(f"connected to Ray at {target}")
    cpus = num_cpus or os.cpu_count() or 1
    ray.init(
        num_cpus=cpus,
        resources={TRIAL_DRIVER: 64},
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": LOCAL_JOB_ENV},
    )
    return Connection(f"started a local Ray cluster ({cpus} CPUs)", started_local=True)


class Interrupted(Exception):
    """The user asked this process to stop (SIGINT or SIGTERM)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn the first SIGINT/SIGTERM into `Interrupted` in the main thread; a second one exits
    at once (130 for SIGINT, 143 for SIGTERM)."""
    caught: list[str] = []

    def handler(number: int, frame: object) -> None:
        name = signal.Signals(number).name
        if caught:
            os._exit(128 + number)
        caught.append(name)
        raise Interrupted(name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
