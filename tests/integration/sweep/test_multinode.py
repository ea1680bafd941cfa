"""A sweep across a two-node Ray cluster (cluster/local-multinode) that loses a node.

The cluster is two `ray start` processes on this machine, each its own node with its own CPUs;
the head alone offers `trial_driver`, as on cluster/gpu.yaml. The sweep runs as a separate driver
(`run_grid.py --address`); its cell trains on the worker node, writing checkpoints to the one
storage path and metrics to the one MLflow store, until that node dies; it then finishes on the
head from the checkpoint the worker node wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from astropt.sweep.cells import expand
from astropt.sweep.grid import load_grid
from astropt.sweep.run import grid_facts

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "cluster" / "local-multinode"
SIZE = {"name": "b", "n_layer": 2, "n_head": 2, "n_embd": 64, "lr": 2e-3}
#: Ports the script uses from its base port: the head's GCS, 16 per node, 100 per node's workers.
PORT_OFFSETS = [0, *range(10, 26), *range(100, 300)]


def _ports_free(base: int) -> bool:
    for offset in PORT_OFFSETS:
        with socket.socket() as s:
            try:
                s.bind(("", base + offset))
            except OSError:
                return False
    return True


def _free_base_port() -> int:
    return next(base for base in range(26379, 40000, 400) if _ports_free(base))


def _grid(folder: Path, galaxies: tuple[str, str], steps: int, every: int) -> Path:
    """One cell of `steps` steps of 960 tokens on one worker, checkpointed `every` steps."""
    train, val = galaxies
    every_ = {"eval_every": every, "checkpoint_every": every, "log_every": every}
    grid = {
        "name": "mn",
        "sizes": [SIZE],
        "budgets": {"tokens": [steps * 960]},
        "data": {"train": train, "val": val},
        "training": {**every_, "eval_batches": 1},
        "resources": {"workers": 1, "cpus_per_worker": 0.5, "max_failures": 2},
        "tracking": {"uri": f"sqlite:///{folder / 'mlflow.db'}", "experiment": "mn"},
        "storage": str(folder / "ray"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def _record(grid: Path) -> dict[str, dict]:
    """Cell name -> status, tokens and rank 0's node, from the grid's MLflow store."""
    uri = load_grid(grid).tracking.uri
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mn")
    runs = client.search_runs([experiment.experiment_id], "tags.`astropt.role` = 'cell'")
    return {
        run.data.tags["astropt.cell"]: {
            "status": run.data.tags["astropt.status"],
            "tokens": run.data.metrics.get("final/tokens_seen"),
            "node": run.data.tags.get("astropt.node_id"),
        }
        for run in runs
    }


def _session_pids(leaders: list[int]) -> list[int]:
    """Every process still in the sessions that the script's `ray start`s lead."""
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    rows = (line.split() for line in out.splitlines())
    return [int(pid) for pid, sid in rows if int(sid) in leaders]


@pytest.fixture(scope="module")
def cluster():
    """A head and one worker node started by the script; stopped by it, by PID, at the end."""
    state = Path(tempfile.mkdtemp(prefix="apt-mn-", dir="/tmp"))  # short: Ray's socket paths
    port = _free_base_port()
    env = os.environ | {
        "ASTROPT_CLUSTER_DIR": str(state),
        "ASTROPT_CLUSTER_PORT": str(port),
        "PYTHON": sys.executable,
    }
    pids = state / "pids"
    try:
        started = subprocess.run(
            [str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=180
        )
        assert started.returncode == 0, started.stderr[-3000:]
        yield started.stdout.split()[-1], json.loads((state / "nodes.json").read_text()), state
    finally:
        leaders = (
            [int(line.split()[0]) for line in pids.read_text().splitlines()]
            if pids.exists()
            else []
        )
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)
    assert leaders and _session_pids(leaders) == [], "local-multinode stop left processes behind"


@contextlib.contextmanager
def _driver(grid: Path, address: str):
    """`run_grid.py GRID --address ADDRESS` in a session of its own, killed if still running;
    its output goes to `driver.log` beside the grid."""
    log = (grid.parent / "driver.log").open("w")
    driver = subprocess.Popen(
        [sys.executable, str(REPO / "sweeps" / "run_grid.py"), str(grid), "--address", address],
        cwd=grid.parent, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield driver
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()


def _leader(state: Path, name: str) -> int:
    """The PID of the `ray start` that leads node `name`'s session."""
    rows = (line.split() for line in (state / "pids").read_text().splitlines())
    return next(int(pid) for pid, node in rows if node == name)


#: Holds every CPU of the head (the only node with `trial_driver`) until its process dies.
HOLD_HEAD = """
import sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False)
hold = ray.remote(num_cpus=2, resources={"trial_driver": 0.01})(lambda: time.sleep(3600)).remote()
print("held", flush=True)
time.sleep(3600)
"""


class HeadHeld:
    """While held, training and Ray Data can only use the worker node (the trial drivers need no
    CPU); `release` frees the head again by killing the holder's process."""

    def __init__(self, address: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLD_HEAD, address],
            stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        assert self.process.stdout.readline().strip() == "held"
        time.sleep(2)  # the task holds the CPUs once it runs, just after the print

    def release(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _checkpointed_cells_on(client: MlflowClient, node: str) -> list[str]:
    """Cells running on `node` (rank 0's tag, set at every start) that have checkpointed: their
    metrics reach MLflow only once a checkpoint holds them."""
    experiment = client.get_experiment_by_name("mn")
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], "tags.`astropt.status` = 'running'")
    return [
        run.data.tags["astropt.cell"]
        for run in runs
        if run.data.tags.get("astropt.node_id") == node and "train/loss" in run.data.metrics
    ]


def test_a_lost_nodes_cell_finishes_on_the_other_from_the_shared_checkpoint(
    cluster, galaxies, tmp_path_factory
):
    """With the head's CPUs held, the cell trains on the worker node; once it has checkpointed,
    every process of that node is killed (as when a machine dies) and the head freed. The cell
    restarts on the head from the checkpoint in the shared storage path and finishes with its
    planned steps and tokens, every step once, in the record a one-node sweep leaves."""
    address, nodes, state = cluster
    head = next(node for node, resources in nodes.items() if "trial_driver" in resources)
    worker = next(node for node in nodes if node != head)
    grid = _grid(tmp_path_factory.mktemp("node-loss"), galaxies, steps=200, every=20)
    client = MlflowClient(load_grid(grid).tracking.uri)
    victims: list[str] = []
    held = HeadHeld(address)
    try:
        with _driver(grid, address) as driver:
            deadline = time.time() + 300
            while not victims and driver.poll() is None and time.time() < deadline:
                victims = _checkpointed_cells_on(client, worker)
                time.sleep(0.5)
            for pid in _session_pids([_leader(state, "worker-1")]) if victims else []:
                os.kill(pid, signal.SIGKILL)
            held.release()
            code = driver.wait(timeout=600)
    finally:
        held.release()
    assert victims, "no cell checkpointed on the worker node: the test did not lose a node"
    assert code == 0, (grid.parent / "driver.log").read_text()[-4000:]
    storage = Path(load_grid(grid).storage_path)
    record = _record(grid)
    cells = {c.name: c for c in expand(load_grid(grid), grid_facts(load_grid(grid)))}
    assert set(record) == set(cells)
    for name, run in record.items():
        assert run["status"] == "finished", name
        assert run["tokens"] == cells[name].plan.tokens_seen, name
    experiment_id = client.get_experiment_by_name("mn").experiment_id
    for name in victims:
        assert record[name]["node"] == head, f"{name} did not move to the head"
        run = client.search_runs([experiment_id], f"tags.`astropt.cell` = '{name}'")[0]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert sorted(steps) == list(range(20, cells[name].plan.steps + 1, 20)), name
        starts = [m.step for m in client.get_metric_history(run.info.run_id, "time/engine_init_s")]
        assert max(starts) > 0, f"{name} started again from step 0, not from its checkpoint"
        assert sorted((storage / name).glob("step_*")), f"no checkpoint of {name} in {storage}"
