"""A whole sweep: validate the grid, check the data once, open the parent run, run the cells."""

from __future__ import annotations

from pathlib import Path

import ray

from astropt.cluster import connect
from astropt.data.synth import ensure_synthetic_dataset
from astropt.probe.scale import probe_scale
from astropt.sweep.cells import Cell, expand
from astropt.sweep.driver import CellJob, run_cells
from astropt.sweep.estimate import branching_saving, plan_table, total_estimate
from astropt.sweep.grid import GridConfig, load_grid
from astropt.sweep.record import open_sweep_run, write_summary
from astropt.tracking import ensure_experiment, make_client, require_reachable, scrub_uri
from astropt.train.trainer import check_data, prepare, require_data_cpus_here


def dry_run(grid: GridConfig) -> str:
    cells = expand(grid)
    lines = [plan_table(cells, grid.resources).to_markdown(index=False, floatfmt=".3g"), ""]
    lines.append(total_estimate(cells, grid.resources))
    if grid.mode == "branching":
        lines.append(branching_saving(cells))
    return "\n".join(lines)


def _ensure_data(grid: GridConfig) -> None:
    if grid.data.synthetic is not None:
        ensure_synthetic_dataset(
            grid.data.root,
            grid.data.synthetic.images,
            grid.image.image_size,
            grid.data.synthetic.seed,
        )


def _jobs(grid: GridConfig, cells: list[Cell], parent_run_id: str) -> list[CellJob]:
    return [
        CellJob(
            cell=cell,
            prepared=prepare(cell.train, grid.resources),
            resources=grid.resources,
            tracking=grid.tracking,
            storage=grid.storage_path,
            parent_run_id=parent_run_id,
            max_failures=grid.resources.max_failures,
            probe=grid.probe,
        )
        for cell in cells
    ]


def run_sweep(grid_path: Path, *, address: str | None = None) -> int:
    """Run (or continue) the grid; print and record the summary. Exit code 0 if all finished."""
    grid = load_grid(grid_path)
    cells = expand(grid)
    require_reachable(grid.tracking.uri)
    _ensure_data(grid)
    check_data(cells[0].train)
    client = make_client(grid.tracking.uri)
    experiment_id = ensure_experiment(client, grid.tracking.experiment, None)
    connection = connect(address)
    print(connection)
    print(f"MLflow: {scrub_uri(grid.tracking.uri)}, experiment {grid.tracking.experiment!r}")
    require_data_cpus_here(connection, grid.resources, grid.resources.max_concurrent)
    parent = open_sweep_run(client, experiment_id, grid.name, grid_path, ray.cluster_resources())
    run_cells(
        _jobs(grid, cells, parent),
        cells,
        max_concurrent=grid.resources.max_concurrent,
        sweep_name=grid.name,
        storage=grid.storage_path,
    )
    out_dir = Path("runs") / "summaries" / grid.name
    table = write_summary(client, experiment_id, parent, out_dir)
    if grid.probe is not None:
        probe_scale(grid.tracking.uri, grid.tracking.experiment, parent, out_dir / "probe")
    names = {c.name for c in cells if c.role != "trunk"}  # trunks serve cells; not in the record
    table = table[table["cell"].isin(names)]
    print(table.to_markdown(index=False, floatfmt=".4g"))
    print(f"summary: {out_dir}/summary.md, plot: {out_dir}/loss_vs_compute.png")
    all_done = (table["status"] == "finished").sum() == len(names)
    client.set_terminated(parent, "FINISHED" if all_done else "FAILED")
    return 0 if all_done else 1
