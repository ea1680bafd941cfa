"""Ctrl-C on a sweep, SIGTERM on a training run: the running cell is recorded as interrupted and
resumable, and no process of the local Ray cluster the command started is left alive."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def env(tmp_path):
    """Its own Ray temp folder (short: socket paths) and its own record of local clusters."""
    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")
    environment = dict(os.environ, RAY_TMPDIR=ray_tmp, XDG_CACHE_HOME=str(tmp_path / "cache"))
    environment.pop("RAY_ADDRESS", None)
    yield environment
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _cell_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], "tags.`astropt.role` = 'cell'")


def _when_training(process: subprocess.Popen, uri: str, experiment: str) -> list[psutil.Process]:
    """Wait until a cell has checkpointed; then every process the command has started."""
    deadline = time.time() + 300
    while time.time() < deadline:
        assert process.poll() is None, "the command ended before it trained"
        if any("train/loss" in r.data.metrics for r in _cell_runs(uri, experiment)):
            return psutil.Process(process.pid).children(recursive=True)
        time.sleep(0.5)
    raise AssertionError("no cell checkpointed within 5 minutes")


def _alive(processes: list[psutil.Process]) -> list[str]:
    alive = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{process.pid} {process.name()}")
    return alive


def _stop(process: subprocess.Popen, signum: int, started: list[psutil.Process]) -> int:
    process.send_signal(signum)
    try:
        code = process.wait(timeout=120)
    finally:
        for child in started:  # whatever the test finds alive is its job to stop, by PID
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
    return code


def test_ctrl_c_on_a_sweep_records_its_cell_interrupted_and_stops_its_cluster(
    env, galaxies, tmp_path
):
    grid = {
        "name": "stop",
        "sizes": [{"name": "a", "n_layer": 1, "n_head": 2, "n_embd": 32, "lr": 2e-3}],
        "budgets": {"tokens": [400 * 960]},
        "data": {"train": galaxies[0], "val": galaxies[1]},
        "training": {"eval_every": 20, "checkpoint_every": 10, "log_every": 10, "eval_batches": 1},
        "resources": {"workers": 1, "cpus_per_worker": 1, "max_failures": 0},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "stop"},
        "storage": str(tmp_path / "ray"),
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    command = [sys.executable, str(REPO / "sweeps" / "run_grid.py"), str(path)]
    sweep = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    started = _when_training(sweep, grid["tracking"]["uri"], "stop")
    code = _stop(sweep, signal.SIGINT, started)
    output = sweep.stdout.read()
    assert code == 130, output[-3000:]
    assert "recorded as interrupted" in output
    assert _alive(started) == [], output[-3000:]
    (run,) = _cell_runs(grid["tracking"]["uri"], "stop")
    assert run.data.tags["astropt.status"] == "interrupted"
    assert run.info.status == "KILLED"

    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=900)  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:]
    (resumed,) = _cell_runs(grid["tracking"]["uri"], "stop")
    assert resumed.info.run_id == run.info.run_id
    assert resumed.data.tags["astropt.status"] == "finished"
    history = MlflowClient(grid["tracking"]["uri"]).get_metric_history(
        resumed.info.run_id, "train/loss"
    )
    assert sorted(m.step for m in history) == list(range(10, 401, 10))


def test_sigterm_on_a_training_run_records_it_interrupted_and_stops_its_cluster(
    env, galaxies, tmp_path
):
    data = str(Path(galaxies[0]).parent)
    command = [sys.executable, "-m", "astropt.train", "--n-layer", "1", "--n-head", "2",
               "--n-embd", "32", "--tokens", str(400 * 960), "--data", data, "--image-size", "64",
               "--patch-size", "16", "--workers", "1",
               "--cpus-per-worker", "1", "--checkpoint-every", "10", "--log-every", "10",
               "--eval-batches", "1", "--lr", "2e-3"]  # fmt: skip
    run = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    started = _when_training(run, uri, "astropt-train")
    code = _stop(run, signal.SIGTERM, started)
    output = run.stdout.read()
    assert code == 143, output[-3000:]
    assert _alive(started) == [], output[-3000:]
    (record,) = _cell_runs(uri, "astropt-train")
    assert record.data.tags["astropt.status"] == "interrupted"
