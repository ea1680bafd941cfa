"""Branching sweeps: a WSD branch resumed from a constant-LR trunk equals a straight WSD run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from astropt.config import ResourcesConfig, TrackingConfig
from astropt.sweep.cells import expand
from astropt.sweep.estimate import dry_run
from astropt.sweep.grid import load_grid
from astropt.sweep.run import grid_facts, run_sweep
from astropt.train.run import run_training

pytestmark = pytest.mark.slow


def _grid(tmp: Path, galaxies: tuple[str, str], name: str = "branching") -> Path:
    grid = {
        "name": name,
        "mode": "branching",
        "sizes": [{"name": "a", "n_layer": 1, "n_head": 2, "n_embd": 32, "lr": 2e-3}],
        "budgets": {"tokens": [9600, 19200]},  # 10 and 20 steps; cooldowns from steps 8 and 16
        "data": {"train": galaxies[0], "val": galaxies[1]},
        "training": {"eval_every": 4, "checkpoint_every": 100, "log_every": 2, "eval_batches": 1},
        # Two trials at a time: a branch waits for its trunk's checkpoint beside the trunk.
        "resources": {"workers": 1, "cpus_per_worker": 0.5, "max_concurrent": 2, "max_failures": 0},
        "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": name},
        "storage": str(tmp / "ray"),
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


@pytest.fixture(scope="module")
def swept(ray_local, galaxies, tmp_path_factory) -> tuple[Path, Path]:
    """The branching grid, run once: (its folder, its grid file)."""
    tmp = tmp_path_factory.mktemp("branching")
    path = _grid(tmp, galaxies)
    assert run_sweep(path) == 0  # every cell finished (trunks are not cells)
    return tmp, path


def test_branches_match_a_straight_wsd_run(swept):
    tmp_path, path = swept
    grid = load_grid(path)
    cells = expand(grid, grid_facts(grid))
    trunk, *branches = cells
    assert trunk.role == "trunk" and trunk.train.keep_steps == (8, 16)
    assert "saving" in dry_run(cells, grid.resources)

    client = MlflowClient(grid.tracking.uri)
    experiment = client.get_experiment_by_name("branching").experiment_id
    runs = {r.data.tags["astropt.cell"]: r for r in client.search_runs([experiment])
            if "astropt.cell" in r.data.tags}  # fmt: skip
    assert runs[trunk.name].data.tags["astropt.role"] == "trunk"
    assert runs[trunk.name].data.metrics["final/tokens_seen"] == 16 * 960  # the shared tokens
    longest = max(branches, key=lambda c: c.plan.steps)
    branch = runs[longest.name]
    assert branch.data.tags["astropt.role"] == "cell"
    assert branch.data.tags["astropt.trunk"] == trunk.name
    assert all(runs[b.name].data.tags["astropt.status"] == "finished" for b in branches)

    straight = run_training(
        longest.train, ResourcesConfig(workers=1), TrackingConfig(uri=grid.tracking.uri,
        experiment="branching"), name="straight", storage_path=str(tmp_path / "ray"),
    )  # fmt: skip
    assert branch.data.metrics["final/tokens_seen"] == straight.tokens_seen == 20 * 960
    assert branch.data.tags["astropt.steps_done"] == "20"
    lr = {m.step: m.value for m in client.get_metric_history(branch.info.run_id, "lr")}
    lr_straight = {m.step: m.value for m in client.get_metric_history(straight.run_id, "lr")}
    assert {s: lr[s] for s in lr if s > 16} == {s: lr_straight[s] for s in lr if s > 16}
    # The branch continues its trunk's data order, which is the straight run's: same images in
    # the same order from the same state, so the same loss up to floating-point order.
    assert branch.data.metrics["final/val_loss"] == pytest.approx(straight.final_val_loss, rel=1e-5)

    # One continuous curve per cell: the trunk's history up to the branch step, once.
    assert branch.data.tags["astropt.inherited_through"] == "16"
    val_steps = [m.step for m in client.get_metric_history(branch.info.run_id, "val/loss")]
    assert sorted(val_steps) == [0, 4, 8, 12, 16, 20] == sorted(set(val_steps))
    trunk_dir = Path(grid.storage_path) / trunk.name
    assert [p.name for p in sorted(trunk_dir.glob("step_*"))] == ["step_000000016"]


def test_a_second_grid_with_the_same_cells_and_storage_trains_its_own(swept, galaxies):
    """Two grids of the same cells (same names) sharing one storage path: the second does not
    take the first's finished trunk, which no longer keeps its branch points, for its own; it
    trains its own trunk and branches, in its own folder."""
    tmp_path, first = swept
    second = _grid(tmp_path, galaxies, name="again")
    assert run_sweep(second) == 0
    grid = load_grid(second)
    client = MlflowClient(grid.tracking.uri)
    experiment = client.get_experiment_by_name("again").experiment_id
    runs = client.search_runs([experiment], "tags.`astropt.status` = 'finished'")
    roles = sorted(r.data.tags["astropt.role"] for r in runs if "astropt.cell" in r.data.tags)
    assert roles == ["cell", "cell", "trunk"]
    trunk = next(r for r in runs if r.data.tags.get("astropt.role") == "trunk")
    assert [m.step for m in client.get_metric_history(trunk.info.run_id, "val/loss")][-1] == 16
    assert Path(grid.storage_path) != Path(load_grid(first).storage_path)
