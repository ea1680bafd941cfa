"""Connecting to Ray: a running cluster only when the user asked for one, else a local one sized
for this box, which this process then owns and stops.

A running cluster is joined when it is named (`address`, from `--address`, or RAY_ADDRESS) or
when it was started with `ray start` (`ray up` runs `ray start` on every node): `ray start`
writes the cluster's address to `<Ray temp dir>/ray_current_cluster` (/tmp/ray by default) and
`ray stop` removes it (ray/scripts/scripts.py), while `ray.init()` never writes it. The file is
trusted only while a raylet on this machine serves that address, since a killed `ray start`
cluster leaves it behind. A local session left by a killed run is never joined: Ray's
`address="auto"`, which joins any GCS it finds on the machine, is not used.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import ray
from ray._common.utils import get_ray_address_file
from ray._private.services import find_bootstrap_address, find_gcs_addresses

from astropt.ray_session import LocalSession, record_session, stop_leftover_sessions, stop_session

#: Ray's own log level in this process: its warnings and errors, not its start-up notes.
QUIET = logging.WARNING
#: A custom resource that Tune trial drivers claim instead of CPUs: a trial driver only waits on
#: its workers, and letting it hold a CPU starves them on small machines (2 cores hang).
TRIAL_DRIVER = "trial_driver"
#: For the jobs of a local cluster: no machine of it can be preempted, so Ray Train's preemption
#: watcher (one more actor process per run, about 2 CPU-seconds on 2 cores) has nothing to watch.
LOCAL_JOB_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
#: Where Ray announces that a new local cluster turned token authentication on (RAY_AUTH_MODE
#: unset), as a WARNING in the middle of the progress lines; the start line says it instead.
AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


@dataclass(frozen=True)
class Connection:
    """Where this process runs Ray: a line for the user saying which cluster it joined or
    started, then what connecting stopped (`notes`), and, when it started a local cluster, that
    cluster's recorded session (a fixed-size local cluster, which unlike an autoscaling one
    cannot grow)."""

    description: str
    session: LocalSession | None = None
    connected_here: bool = True
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "\n".join((self.description, *self.notes))

    @property
    def started_local(self) -> bool:
        return self.session is not None

    def shutdown(self, force: bool = False) -> None:
        """Disconnect from Ray; a local cluster this process started is stopped with every
        process of it (SIGTERM, 5 s, SIGKILL) and its record removed. A joined cluster keeps
        running. `force`: no `ray.shutdown()` (it may be what is hanging), SIGKILL at once; for
        a second Ctrl-C or a signal handler, with the process exiting right after.
        Does nothing for a connection made earlier in this process by someone else."""
        if not self.connected_here:
            return
        if not force:
            ray.shutdown()
        if self.session is not None:
            stop_session(self.session, force=force)


def connect(address: str | None = None, *, num_cpus: int | None = None) -> Connection:
    """Join the cluster at `address` (else RAY_ADDRESS, else a running `ray start` cluster on
    this machine), or start a local cluster of `num_cpus` (default: all) CPUs; `address="local"`
    always starts a new local one. First, leftovers of local clusters that earlier runs on this
    machine started and died without stopping are stopped, a line each in `notes`."""
    if ray.is_initialized():
        return Connection("already connected to Ray", connected_here=False)
    stopped = tuple(stop_leftover_sessions())
    return replace(_join_or_start(address, num_cpus), notes=stopped)


def _join_or_start(address: str | None, num_cpus: int | None) -> Connection:
    if address == "local":
        return _start_local(num_cpus, note="")
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=QUIET)
        return Connection(f"joined the Ray cluster at {address} (the address given)")
    if os.environ.get("RAY_ADDRESS"):
        target = os.environ["RAY_ADDRESS"]
        ray.init(address=target, log_to_driver=False, logging_level=QUIET)
        return Connection(f"joined the Ray cluster at {target} (RAY_ADDRESS)")
    recorded = find_bootstrap_address(None)
    if recorded is None:
        return _start_local(num_cpus, note="")
    where = get_ray_address_file(None)
    if recorded not in find_gcs_addresses():
        return _start_local(num_cpus, note=f"; the `ray start` cluster in {where} is not running")
    ray.init(address=recorded, log_to_driver=False, logging_level=QUIET)
    return Connection(f"joined the Ray cluster at {recorded}, started with `ray start` ({where})")


def _start_local(num_cpus: int | None, note: str) -> Connection:
    cpus = num_cpus or os.cpu_count() or 1
    auth_notice = logging.getLogger(AUTH_NOTICE_LOGGER)
    level = auth_notice.level
    auth_notice.setLevel(logging.ERROR)
    try:
        ray.init(
            address="local",
            num_cpus=cpus,
            resources={TRIAL_DRIVER: 64},
            include_dashboard=False,
            log_to_driver=False,
            logging_level=QUIET,
            runtime_env={"env_vars": LOCAL_JOB_ENV},
        )
    finally:
        auth_notice.setLevel(level)
    session = record_session(Path(ray._private.worker._global_node.get_session_dir_path()))
    return Connection(
        f"started a local Ray cluster ({cpus} CPU{'s' * (cpus > 1)}, {session.name}, "
        f"{_authentication()}); it stops with this run{note}",
        session=session,
    )


def _authentication() -> str:
    """Whether the local cluster just started requires Ray's token: with RAY_AUTH_MODE unset,
    `ray.init` turns it on for a new local cluster and sets RAY_AUTH_MODE=token."""
    mode = os.environ.get("RAY_AUTH_MODE", "").lower()
    if mode == "token":
        return "token authentication on"
    return f"token authentication off: RAY_AUTH_MODE={mode or 'unset'}"
