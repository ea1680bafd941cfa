"""DeepSpeed outside Ray Train, for benchmarks that time its engine in one process."""

from __future__ import annotations

import os

import deepspeed


def init_single_process_group(backend: str) -> None:
    """DeepSpeed wants a process group; one process is rank 0 of a world of one."""
    defaults = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    for key, value in (defaults | {"MASTER_PORT": "29533"}).items():
        os.environ.setdefault(key, value)
    deepspeed.init_distributed(dist_backend=backend)
