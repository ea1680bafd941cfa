"""Shared fixtures: one local Ray cluster per test session, and a small synthetic galaxy set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_local():
    """A 2-CPU local Ray cluster shaped like a laptop, shut down at the end of the session."""
    import ray

    from astropt.cluster import TRIAL_DRIVER

    ray.init(num_cpus=2, resources={TRIAL_DRIVER: 64}, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def galaxies(tmp_path_factory) -> tuple[str, str]:
    """(train, val) shard sets of 64 x 64 synthetic galaxies, made once per session."""
    from astropt.data.synth import ensure_synthetic_dataset

    root = tmp_path_factory.mktemp("galaxies") / "synthetic-64"
    train, val = ensure_synthetic_dataset(str(root), 1600, 64, 0)
    return str(train), str(val)


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
