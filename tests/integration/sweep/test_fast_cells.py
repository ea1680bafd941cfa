"""Runs trained inside their Tune trial's process (one CPU worker on a local cluster): Ray Train's
local mode keeps no checkpoints and retries nothing, so the project's own guarantees are tested
here: a killed trial resumes from its checkpoint, a killed driver's sweep continues, every
metric step is logged once, and a stalled cell fails by the watchdog with its phase."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from astropt.sweep.cells import expand
from astropt.sweep.grid import load_grid
from astropt.sweep.run import grid_facts, run_sweep

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
TINY = {"n_layer": 1, "n_head": 2, "n_embd": 32, "lr": 2e-3}


def _grid(tmp: Path, galaxies, sizes: list[dict], steps: int, **extra) -> Path:
    grid = {
        "name": "fast",
        "sizes": sizes,
        "budgets": {"tokens": [steps * 960]},
        "data": {"train": galaxies[0], "val": galaxies[1]},
        "training": {"eval_every": 10, "checkpoint_every": 10, "log_every": 5, "eval_batches": 1},
        "resources": {"workers": 1, "cpus_per_worker": 1, "in_process": True, "max_failures": 1},
        "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "fast"},
        "storage": str(tmp / "ray"),
    } | extra
    path = tmp / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def _runs(uri: str) -> dict[str, object]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("fast")
    if experiment is None:
        return {}
    runs = client.search_runs([experiment.experiment_id], "tags.`astropt.role` = 'cell'")
    return {r.data.tags["astropt.cell"]: r for r in runs}


def _steps(uri: str, run_id: str, key: str) -> list[int]:
    steps = [m.step for m in MlflowClient(uri).get_metric_history(run_id, key)]
    assert len(steps) == len(set(steps)), f"{key}: repeated steps {sorted(steps)}"
    return sorted(steps)


def _trial_pids() -> list[int]:
    """PIDs of the live Tune trial actors of this session's cluster. Ray names the class
    `ImplicitFunc` or, once a cluster has seen that name, `wrap_function.<locals>.ImplicitFunc`."""
    import ray._private.state as state

    return [
        actor["Pid"]
        for actor in state.actors().values()
        if actor["ActorClassName"].rsplit(".", 1)[-1] == "ImplicitFunc"
        and actor["State"] == "ALIVE"
    ]


def test_a_killed_trial_resumes_from_its_checkpoint_with_every_step_once(
    ray_local, galaxies, tmp_path
):
    # rank 0 pauses after step 11, once step 10's checkpoint is complete: the killer's window
    stall = {"size": "a", "seconds": 5, "after_step": 11}
    training = {"eval_every": 10, "checkpoint_every": 10, "log_every": 5, "eval_batches": 1}
    path = _grid(
        tmp_path,
        galaxies,
        [{"name": "a"} | TINY],
        steps=60,
        training=training | {"stall_for_test": stall},
    )
    grid = load_grid(path)
    uri = grid.tracking.uri
    killed: list[int] = []
    swept = threading.Event()
    earlier = set(_trial_pids())  # an earlier test's trial actors, maybe not gone yet

    def kill_after_first_checkpoint() -> None:
        """This sweep's trial process, once the run's first checkpoint is complete (its folder,
        not MLflow, which only hears of it later): polling stops when the sweep does."""
        while not swept.is_set():
            ours = [pid for pid in _trial_pids() if pid not in earlier]
            if any(Path(grid.storage_path).glob("*/step_*/COMPLETE")) and ours:
                os.kill(ours[0], signal.SIGKILL)
                killed.append(ours[0])
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    killer.start()
    try:
        assert run_sweep(path) == 0
    finally:
        swept.set()
        killer.join()
    assert killed, "no trial was killed: the test did not exercise a failure"
    (run,) = _runs(uri).values()
    assert run.data.tags["astropt.status"] == "finished"
    assert run.data.metrics["final/tokens_seen"] == 60 * 960
    assert _steps(uri, run.info.run_id, "train/loss") == list(range(5, 61, 5))
    assert _steps(uri, run.info.run_id, "val/loss") == list(range(0, 61, 10))
    starts = _steps(uri, run.info.run_id, "time/engine_init_s")
    assert starts[0] == 0 and max(starts) >= 10, (
        f"restarted from step 0, not a checkpoint: {starts}"
    )


def test_a_killed_drivers_sweep_continues_where_it_was(galaxies, tmp_path):
    """`run_grid.py` with a local cluster of its own, SIGKILLed with its whole process group
    while its second cell trains; the same command again skips the first cell and continues
    the second from its checkpoint."""
    sizes = [{"name": "a"} | TINY, {"name": "b"} | TINY | {"n_embd": 64}]
    path = _grid(tmp_path, galaxies, sizes, steps=80)
    uri = load_grid(path).tracking.uri
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, str(REPO / "sweeps" / "run_grid.py"), str(path)]
    with (tmp_path / "first.log").open("w") as log:
        driver = subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True,
                                  stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    deadline, finished, second = time.time() + 600, {}, None
    while time.time() < deadline and second is None:
        time.sleep(0.5)
        runs = _runs(uri)
        finished = {n: r for n, r in runs.items() if r.data.tags["astropt.status"] == "finished"}
        second = next((r for n, r in runs.items() if n not in finished and finished
                       and "train/loss" in r.data.metrics), None)  # fmt: skip
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert second is not None, (tmp_path / "first.log").read_text()[-3000:]

    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=900)  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:]
    assert "(finished earlier)" in again.stdout
    runs = _runs(uri)
    cells = {c.name for c in expand(load_grid(path), grid_facts(load_grid(path)))}
    assert set(runs) == cells and all(
        r.data.tags["astropt.status"] == "finished" for r in runs.values()
    )
    for name, before in finished.items():
        assert runs[name].info.end_time == before.info.end_time, f"{name} was trained again"
    resumed = runs[second.data.tags["astropt.cell"]]
    assert resumed.info.run_id == second.info.run_id
    assert _steps(uri, resumed.info.run_id, "train/loss") == list(range(5, 81, 5))
    assert max(_steps(uri, resumed.info.run_id, "time/engine_init_s")) > 0


def test_a_stalled_cell_fails_by_the_watchdog_with_its_phase_and_the_others_finish(
    ray_local, galaxies, tmp_path
):
    sizes = [{"name": "a"} | TINY, {"name": "stuck"} | TINY]
    training = {
        "eval_every": 10, "checkpoint_every": 10, "log_every": 5, "eval_batches": 1,
        "watchdog": {"first_step_s": 20, "min_s": 15, "step_factor": 5},
        "stall_for_test": {"size": "stuck", "seconds": 600},
    }  # fmt: skip
    path = _grid(tmp_path, galaxies, sizes, steps=20, training=training,
                 resources={"workers": 1, "cpus_per_worker": 0.5, "in_process": True,
                            "max_failures": 0, "max_concurrent": 2})  # fmt: skip
    started = time.time()
    assert run_sweep(path) == 1  # not every cell finished
    assert time.time() - started < 300, "the stalled cell was not stopped"
    runs = _runs(load_grid(path).tracking.uri)
    stuck = next(r for n, r in runs.items() if n.startswith("stuck"))
    other = next(r for n, r in runs.items() if n.startswith("a-"))
    assert other.data.tags["astropt.status"] == "finished"
    assert stuck.data.tags["astropt.status"] == "failed"
    assert stuck.data.tags["astropt.phase"] == "training"
    error = stuck.data.tags["astropt.error"]
    assert error.startswith("no progress since step 0 for ") and "last phase: training" in error
