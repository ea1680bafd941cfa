"""Shared fixtures: one local Ray cluster per test session, and a small synthetic galaxy set."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_local():
    """A 2-CPU local Ray cluster shaped like a laptop, as run_grid.py starts it; shut down at the
    end of the session."""
    import ray

    from astropt.cluster import connect

    connect("local", num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def galaxies(tmp_path_factory) -> tuple[str, str]:
    """(train, val) shard sets of 64 x 64 synthetic galaxies, made once per session: 5,794
    training images, 90 steps of 64, so that most test runs stream one epoch through Ray Data
    (later epochs come from the workers' memory)."""
    from astropt.data.synthetic_sets import ensure_synthetic_dataset

    root = tmp_path_factory.mktemp("galaxies") / "synthetic-64"
    train, val = ensure_synthetic_dataset(str(root), 6400, 64, 0)
    return str(train), str(val)


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 (as a cluster's head runs it), stoppable and
    restartable on the same port and store; every process is stopped by its PID."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.folder = folder
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
             "--artifacts-destination", str(self.folder / "artifacts")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("mlflow server did not start within 90 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None


@pytest.fixture
def mlflow_server(tmp_path: Path):
    server = MlflowServer(tmp_path)
    server.start()
    yield server
    server.stop()
