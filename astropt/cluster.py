"""Connecting to Ray: a running cluster when there is one, else a local one sized for this box."""

from __future__ import annotations

import os

import ray

#: A custom resource that Tune trial drivers claim instead of CPUs: a trial driver only waits on
#: its workers, and letting it hold a CPU starves them on small machines (2 cores hang).
TRIAL_DRIVER = "trial_driver"
STARTED_LOCAL = "started a local Ray cluster"


def connect(address: str | None = None, *, num_cpus: int | None = None) -> str:
    """`ray.init` to `address` (or RAY_ADDRESS, or a cluster started with `ray start`), else
    start a local cluster; `address="local"` always starts a new local one. Returns a one-line
    description for the user."""
    if ray.is_initialized():
        return "already connected"
    target = address or os.environ.get("RAY_ADDRESS")
    if target == "local":
        target = None
    elif target is None:
        try:
            ray.init(address="auto", log_to_driver=False)
            return "connected to the running Ray cluster"
        except ConnectionError:
            pass
    else:
        ray.init(address=target, log_to_driver=False)
        return f"connected to Ray at {target}"
    cpus = num_cpus or os.cpu_count() or 1
    ray.init(
        num_cpus=cpus,
        resources={TRIAL_DRIVER: 64},
        include_dashboard=False,
        log_to_driver=False,
    )
    return f"{STARTED_LOCAL} ({cpus} CPUs)"
