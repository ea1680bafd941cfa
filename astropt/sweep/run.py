"""A whole sweep: validate the grid, make its data, plan every run, open the records, run them.

Runs finished earlier are skipped (said so); the others continue from their checkpoints. The
first Ctrl-C (or SIGTERM) records the running runs as interrupted and stops every process of a
cluster this sweep started; the next run of the same command continues them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import ray
import yaml

from astropt.cluster import Connection, connect
from astropt.config import DataConfig, ImageConfig
from astropt.data.synthetic_sets import ensure_synthetic_dataset, expected_split
from astropt.heartbeat import new_board
from astropt.probe.scale import probe_scale
from astropt.record import (
    Role,
    Status,
    Tag,
    ensure_experiment,
    log_params,
    make_client,
    open_run,
    require_reachable,
    scrub_uri,
    ui_link,
)
from astropt.stopping import Interrupted, call_interruptibly, stop_on_signals
from astropt.sweep.cells import Cell, expand
from astropt.sweep.driver import Driver, tuner_for
from astropt.sweep.estimate import sweep_costs
from astropt.sweep.grid import GridConfig, load_grid
from astropt.sweep.progress import Estimator
from astropt.sweep.runner import RunJob
from astropt.sweep.summary import cell_table, open_sweep_run, write_summary
from astropt.train.plan import DataFacts
from astropt.train.run import run_params
from astropt.train.trainer import RunData, check_data, require_data_cpus_here


def grid_facts(grid: GridConfig) -> DataFacts:
    """What the plans need of the data, without reading it (a dry run): the set's counts when it
    exists, else those a synthetic set will have, else the grid's `data.train_images`."""
    train, val = grid.data.uris()
    try:
        return RunData.read_facts(train, val)
    except (FileNotFoundError, OSError):
        pass
    if grid.data.synthetic is not None:
        counts = expected_split(grid.data.synthetic.images, grid.data.synthetic.seed)
        return DataFacts(counts["train"], counts["val"])
    return DataFacts(grid.data.train_images, None)


def ensure_data(data: DataConfig, image: ImageConfig) -> None:
    """Generate a synthetic set that is missing, saying so; never replace one."""
    if data.synthetic is None:
        return
    root, spec = data.root, data.synthetic

    def announce() -> None:
        print(
            f"generating {spec.images:,} synthetic galaxies ({image.image_size} px, seed "
            f"{spec.seed}) in {root}: once, later runs reuse them",
            flush=True,
        )

    ensure_synthetic_dataset(root, spec.images, image.image_size, spec.seed, announce=announce)


@dataclass(frozen=True)
class Opened:
    """The runs this sweep will train (already done ones left out), by name."""

    run_ids: dict[str, str]
    skipped: list[str]


def open_runs(client, experiment_id: str, parent: str, cells: list[Cell], data: RunData) -> Opened:
    """Every run of the grid in MLflow, created pending if new, with its params."""
    run_ids, skipped = {}, []
    for cell in cells:
        tags = {
            Tag.SIZE: cell.size,
            Tag.SEED: cell.train.seed,
            Tag.TOKENS_BUDGET: cell.train.tokens,
            Tag.LR_MULTIPLIER: cell.train.lr_multiplier,
        }
        if cell.trunk is not None:
            tags |= {Tag.TRUNK: cell.trunk, Tag.BRANCH_STEP: cell.branch_step}
        run_id, held = open_run(
            client,
            experiment_id,
            cell.name,
            role=cell.role,
            parent_run_id=parent,
            tags=tags,
            status=Status.PENDING,
        )
        if held is not None and held.done:
            skipped.append(cell.name)
            continue
        log_params(client, run_id, run_params(cell.train, cell.plan, cell.resources))
        run_ids[cell.name] = run_id
    return Opened(run_ids, skipped)


def _announce_skipped(opened: Opened, cells: list[Cell]) -> None:
    for name in opened.skipped:
        print(f"skipped {name} (finished earlier)", flush=True)
    if opened.skipped and not opened.run_ids:
        print(f"all {len(cells)} runs finished earlier; writing the summary", flush=True)


def run_sweep(grid_path: Path, *, address: str | None = None) -> int:
    """Run (or continue) the grid file; print and record the summary. Exit code 0 if every
    cell finished."""
    return run_grid(load_grid(grid_path), grid_path=grid_path, address=address)


#: Libraries' own progress that would interleave with the sweep's lines: their informational
#: messages go, their warnings and errors stay.
QUIET_LOGGERS = ("ray", "mlflow", "alembic")


def quiet_libraries() -> None:
    """No Tune tables, Ray start-up notes or MLflow database messages between the progress
    lines; warnings and errors still show."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's old reporter, silent at verbose 0
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def run_grid(grid: GridConfig, *, grid_path: Path | None, address: str | None = None) -> int:
    """Run (or continue) a grid; `grid_path` None: the train command's grid of one cell."""
    quiet_libraries()
    require_reachable(grid.tracking.uri)
    ensure_data(grid.data, grid.image)
    check_data(grid.data, grid.image)
    data = RunData.read(*grid.data.uris())
    cells = expand(grid, data.facts)
    client = make_client(grid.tracking.uri)
    experiment_id = ensure_experiment(client, grid.tracking.experiment)
    connection = connect(address)
    print(connection, flush=True)
    print(f"MLflow: {scrub_uri(grid.tracking.uri)}, experiment {grid.tracking.experiment!r}")
    try:
        _require_cpus(connection, grid, cells)
        grid_text = (
            grid_path.read_text() if grid_path else yaml.safe_dump(grid.model_dump(mode="json"))
        )
        cluster = ray.cluster_resources()
        parent = open_sweep_run(client, experiment_id, grid.name, grid_text, cluster)
        opened = open_runs(client, experiment_id, parent, cells, data)
        _announce_skipped(opened, cells)
        if opened.run_ids:
            _train(grid, cells, opened, data, connection)
    except Interrupted as stop:
        client.set_terminated(parent, "KILLED")
        return stop.exit_code
    finally:
        connection.shutdown()  # a local cluster this run started goes with every process of it
    if grid_path is None:
        return _report_single(client, experiment_id, parent, grid, cells[0].name)
    return _finish(grid, client, experiment_id, parent, cells)


def _require_cpus(connection: Connection, grid: GridConfig, cells: list[Cell]) -> None:
    local = connection.started_local
    streamed = [
        c for c in cells if not c.plan.data_in_memory or not c.resources.trains_in_process(local)
    ]
    for cell in streamed[:1]:
        require_data_cpus_here(connection, cell.resources, grid.resources.max_concurrent)


def _train(
    grid: GridConfig, cells: list[Cell], opened: Opened, data: RunData, connection: Connection
) -> int:
    board = new_board()
    jobs = [
        RunJob(
            cell=cell,
            run_id=opened.run_ids[cell.name],
            data=data,
            tracking=grid.tracking,
            storage=grid.storage_path,
            max_failures=grid.resources.max_failures,
            board=board,
            in_process=cell.resources.trains_in_process(connection.started_local),
            probe=grid.probe,
        )
        for cell in cells
        if cell.name in opened.run_ids
    ]
    prior = sweep_costs([j.cell for j in jobs], grid.resources)
    estimator = Estimator(prior, grid.resources.max_concurrent)
    driver = Driver({job.cell.name: job for job in jobs}, estimator)
    tuner = tuner_for(
        jobs,
        driver,
        max_concurrent=grid.resources.max_concurrent,
        name=grid.name,
        storage=grid.storage_path,
        max_failures=grid.resources.max_failures,
    )
    with stop_on_signals(connection):
        try:
            call_interruptibly(tuner.fit)
        except Interrupted as stop:
            names = driver.interrupt()
            print(
                f"{stop}: {len(names)} run(s) recorded as interrupted; run the same command "
                "again to continue them",
                flush=True,
            )
            raise


def _report_single(client, experiment_id: str, parent: str, grid: GridConfig, name: str) -> int:
    """The train command's last line: how its run ended and where to find it."""
    table = cell_table(client, experiment_id, parent)
    row = table[table["cell"] == name].iloc[0]
    loss = "-" if pd.isna(row["final_val_loss"]) else f"{row['final_val_loss']:.4g}"
    tokens = "-" if pd.isna(row["D"]) else f"{row['D']:.4g}"
    print(
        f"run {row['cell']}: {row['status']}, final val loss {loss}, {tokens} tokens; "
        f"MLflow experiment {grid.tracking.experiment!r}, run "
        f"{row['run_id']}; weights: its model/ artifacts (python -m astropt.probe --run-id "
        f"{row['run_id']} ...)"
    )
    return 0 if row["status"] == Status.FINISHED else 1


def _finish(grid: GridConfig, client, experiment_id: str, parent: str, cells: list[Cell]) -> int:
    out_dir = Path("runs") / "summaries" / grid.name
    table = write_summary(client, experiment_id, parent, out_dir)
    if grid.probe is not None:
        probe_scale(grid.tracking.uri, grid.tracking.experiment, parent, out_dir / "probe")
    names = {c.name for c in cells if c.role == Role.CELL}
    table = table[table["cell"].isin(names)]
    print(table.drop(columns="run_id").to_markdown(index=False, floatfmt=".4g"))
    print(
        f"summary: {out_dir}/summary.md, plots: {out_dir}/loss_vs_compute.png, "
        f"{out_dir}/curves.png; fit it: python -m astropt.fit_scaling --experiment "
        f"{grid.tracking.experiment}"
    )
    print(f"curves of every cell in the MLflow UI: {ui_link(grid.tracking.uri, experiment_id)}")
    all_done = (table["status"] == Status.FINISHED).sum() == len(names)
    client.set_terminated(parent, "FINISHED" if all_done else "FAILED")
    return 0 if all_done else 1
