"""Whole sweeps with real Ray Tune, Ray Train, DeepSpeed and MLflow (sqlite and a real server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from astropt.sweep.cells import expand as expand_with
from astropt.sweep.grid import load_grid
from astropt.sweep.run import grid_facts, run_sweep

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]


def expand(grid):
    return expand_with(grid, grid_facts(grid))


TINY = {"n_layer": 1, "n_head": 2, "n_embd": 32, "lr": 2e-3}
SMALL = {"n_layer": 2, "n_head": 2, "n_embd": 64, "lr": 2e-3}


def _grid(
    tmp: Path, galaxies: tuple[str, str], tracking_uri: str, sizes: list, **extra: object
) -> Path:
    train, val = galaxies
    grid = {
        "name": "t",
        "sizes": sizes,
        "budgets": {"tokens": [9600]},  # 10 steps of 960 tokens
        "data": {"train": train, "val": val},
        "training": {
            "eval_every": 10,
            "checkpoint_every": 10,
            "log_every": 5,
            "eval_batches": 1,
            "divergence": {"min_steps": 5, "spike_factor": 3.0},
        },
        "resources": {"workers": 1, "cpus_per_worker": 0.5, "max_failures": 0},
        "tracking": {"uri": tracking_uri, "experiment": "t"},
        "storage": str(tmp / "ray"),
    } | extra
    path = tmp / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def _record(uri: str) -> dict[str, dict]:
    """Cell name -> what MLflow holds for it, across the whole experiment."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("t")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    cells = [r for r in runs if r.data.tags.get("astropt.role") == "cell"]
    names = [r.data.tags["astropt.cell"] for r in cells]
    assert len(names) == len(set(names)), f"duplicated cell runs: {sorted(names)}"
    parents = [r for r in runs if r.data.tags.get("astropt.role") == "sweep"]
    assert len(parents) == 1
    return {
        r.data.tags["astropt.cell"]: {
            "run_id": r.info.run_id,
            "parent": r.data.tags["mlflow.parentRunId"],
            "status": r.data.tags["astropt.status"],
            "end_time": r.info.end_time,
            "loss": r.data.metrics.get("final/val_loss"),
            "tokens": r.data.metrics.get("final/tokens_seen"),
            "n_params": r.data.params.get("n_params"),
            "parent_id": parents[0].info.run_id,
        }
        for r in cells
    }


@pytest.fixture(scope="module")
def local_sweep(ray_local, galaxies, tmp_path_factory):
    """2 sizes, plus a size whose huge learning rate makes it diverge; two cells at a time."""
    tmp = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    sizes = [
        {"name": "a"} | TINY,
        {"name": "b"} | SMALL,
        {"name": "boom"} | TINY | {"lr": 50.0},
    ]
    probe = {"targets": ["mag_r", "r_eff_pix"], "max_images": 200, "folds": 3}
    resources = {"workers": 1, "cpus_per_worker": 0.5, "max_failures": 0, "max_concurrent": 2}
    path = _grid(tmp, galaxies, uri, sizes, probe=probe, resources=resources)
    code = run_sweep(path)
    return path, uri, code, tmp


def test_grid_leaves_one_finished_child_run_per_cell_under_one_parent(local_sweep):
    path, uri, _, _ = local_sweep
    record = _record(uri)
    cells = expand(load_grid(path))
    assert set(record) == {c.name for c in cells}
    assert len({r["parent"] for r in record.values()}) == 1
    for cell in cells:
        run = record[cell.name]
        if cell.size == "boom":
            continue
        assert run["status"] == "finished"
        assert run["tokens"] == cell.plan.tokens_seen
        assert run["n_params"] == str(cell.plan.n_params)
    summary = (Path("runs") / "summaries" / "t" / "summary.csv").read_text()
    assert all(c.name in summary for c in cells)
    artifacts = {f.path for f in MlflowClient(uri).list_artifacts(run["parent_id"], "summary")}
    assert {"summary/summary.csv", "summary/summary.md", "summary/loss_vs_compute.png"} <= artifacts


def test_every_finished_cell_is_probed_and_the_parent_has_probe_vs_scale(local_sweep):
    _, uri, _, _ = local_sweep
    client = MlflowClient(uri)
    for name, run in _record(uri).items():
        metrics = client.get_run(run["run_id"]).data.metrics
        probed = {"probe/mag_r/r2", "probe/r_eff_pix/r2"} <= set(metrics)
        assert probed == (run["status"] == "finished"), name
    parent = next(iter(_record(uri).values()))["parent_id"]
    scale = {f.path for f in client.list_artifacts(parent, "probe_scale")}
    assert "probe_scale/probe_vs_scale.png" in scale


def test_a_diverging_cell_is_tagged_and_the_others_finish(local_sweep):
    _, uri, code, _ = local_sweep
    record = _record(uri)
    boom = [r for name, r in record.items() if name.startswith("boom")]
    rest = [r for name, r in record.items() if not name.startswith("boom")]
    assert [r["status"] for r in boom] == ["diverged"]
    assert all(r["status"] == "finished" for r in rest) and len(rest) == 2
    assert code == 1  # not every cell finished: the exit code says so


def _run_grid(path: Path, address: str, *extra: str) -> subprocess.Popen:
    """The sweep's command in its own process group; its output goes to `<grid>.<n>.log`."""
    log = path.with_suffix(f".{len(list(path.parent.glob('*.log')))}.log").open("w")
    return subprocess.Popen(
        [sys.executable, str(REPO / "sweeps" / "run_grid.py"), str(path), "--address", address,
         *extra],
        cwd=path.parent, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_killed_driver_resumes_against_a_server_without_rerunning_finished_cells(
    ray_local, galaxies, mlflow_server, tmp_path, local_sweep
):
    # Two cells, one at a time: the first finishes, the driver dies in the second.
    sizes = [{"name": "a"} | TINY, {"name": "b"} | SMALL]
    path = _grid(tmp_path, galaxies, mlflow_server.uri, sizes)
    address = ray_local.get_runtime_context().gcs_address
    driver = _run_grid(path, address)
    deadline = time.time() + 600
    finished: dict[str, dict] = {}
    while time.time() < deadline and not finished:
        time.sleep(2)
        try:
            finished = {
                k: v for k, v in _record(mlflow_server.uri).items() if v["status"] == "finished"
            }
        except (AttributeError, AssertionError):
            continue  # experiment or parent not created yet
    assert finished, "no cell finished within 10 minutes"
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and everything it started
    driver.wait()

    resumed = _run_grid(path, address, "--resume")
    assert resumed.wait(timeout=900) == 0, path.with_suffix(".1.log").read_text()[-3000:]
    record = _record(mlflow_server.uri)
    cells = expand(load_grid(path))
    assert set(record) == {c.name for c in cells}
    assert all(r["status"] == "finished" for r in record.values())
    for name, before in finished.items():
        assert record[name]["run_id"] == before["run_id"]
        assert record[name]["end_time"] == before["end_time"], f"{name} was trained again"
    # The same grid on a server gives the same record as on the local sqlite store.
    local = {k: v for k, v in _record(local_sweep[1]).items() if k in record}
    assert set(local) == set(record)
    for name, run in record.items():
        assert run["tokens"] == local[name]["tokens"]
        assert run["n_params"] == local[name]["n_params"]
        assert run["loss"] == pytest.approx(local[name]["loss"], rel=0.05)
