"""`--dry-run`: every run of the grid as a table or JSON, with its epochs, compute both ways, the
GPUs and node type it asks for, a rough wall time, and GPU-hours (and cost) per node type.

Times are rough: start-up per run plus training FLOPs (with attention) at an assumed fraction of
peak (GPU) or at this machine's measured matmul rate (CPU); the sweep's ETA replaces them with
measured rates once it runs.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass

import pandas as pd
import torch

from astropt.compute import PEAK_BF16_FLOPS
from astropt.config import ResourcesConfig
from astropt.record import Role
from astropt.sweep.cells import Cell
from astropt.sweep.grid import NodeType, SweepResources
from astropt.sweep.progress import minutes

#: Start-up of one run on a 2-core CPU machine: in the trial's process (one CPU worker), or a
#: worker group; see benchmarks/README.md (sweep overhead).
STARTUP_S = {True: 5.0, False: 24.0}
#: Fraction of peak a GPU run sustains, and the GPU assumed when the grid names no node type.
GPU_MFU, ASSUMED_GPU = 0.35, "A100"


@dataclass(frozen=True)
class Estimate:
    """The prior of the sweep's ETA: training FLOP/s and start-up seconds per run."""

    flops_per_s: float
    startup_s: float


def cpu_flops_per_s(seconds: float = 0.3) -> float:
    """This machine's float32 matmul rate, measured for a moment."""
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return n * 2 * 512**3 / (time.perf_counter() - start)


def node_type(resources: ResourcesConfig, sweep: SweepResources) -> tuple[str, NodeType]:
    """The node type a run is booked on (or, with none declared, an assumed one)."""
    booked = sweep.node_type_for(resources)
    if booked is not None:
        return booked
    gpus = round(resources.workers * resources.gpus_per_worker)
    return f"{gpus} x {ASSUMED_GPU} (assumed)", NodeType(gpus=gpus)


def run_rate(resources: ResourcesConfig, sweep: SweepResources, cpu_rate: float) -> float:
    if not resources.use_gpu:
        return cpu_rate
    _, node = node_type(resources, sweep)
    peak = PEAK_BF16_FLOPS.get(node.gpu, PEAK_BF16_FLOPS[ASSUMED_GPU])
    return GPU_MFU * peak * resources.workers * resources.gpus_per_worker


def sweep_estimate(cells: list[Cell], resources: SweepResources) -> Estimate:
    gpu = any(c.resources.use_gpu for c in cells)
    rate = run_rate(cells[0].resources, resources, 0.0 if gpu else cpu_flops_per_s())
    in_process = all(c.resources.trains_in_process(local_cluster=True) for c in cells)
    return Estimate(flops_per_s=rate, startup_s=STARTUP_S[in_process])


def rows(cells: list[Cell], resources: SweepResources) -> list[dict[str, object]]:
    """One record per run, in the order the sweep starts them."""
    gpu = any(c.resources.use_gpu for c in cells)
    cpu_rate = 0.0 if gpu else cpu_flops_per_s()
    out = []
    for c in cells:
        plan, res = c.plan, c.resources
        seconds = STARTUP_S[
            res.trains_in_process(local_cluster=not res.use_gpu)
        ] + c.own_compute.attention / run_rate(res, resources, cpu_rate)
        epochs = plan.epochs_at(plan.steps)
        out.append(
            {
                "name": c.name,
                "size": c.size,
                "role": c.role if c.trunk is None else f"branch@{c.branch_step}",
                "n_params": plan.n_params,
                "n_params_total": plan.n_params_total,
                "tokens": plan.tokens_seen,
                "unique_tokens": plan.unique_tokens,
                "epochs": epochs,
                "global_batch_tokens": plan.global_batch_tokens,
                "steps": plan.steps,
                "warmup_steps": plan.warmup_steps,
                "lr": plan.lr,
                "lr_multiplier": c.train.lr_multiplier,
                "flops_6nd": c.compute.six_nd,
                "flops_attention": c.compute.attention,
                "workers": res.workers,
                "gpus": round(res.workers * res.gpus_per_worker) if res.use_gpu else 0,
                "node_type": node_type(res, resources)[0] if res.use_gpu else "cpu",
                "est_wall_s": seconds,
            }
        )
    return out


def node_hours(records: list[dict], types: dict[str, NodeType]) -> dict[str, dict]:
    """GPU-hours, node-hours and (with a price) cost per node type, runs one after another."""
    totals: dict[str, dict] = defaultdict(lambda: {"runs": 0, "gpu_hours": 0.0, "node_hours": 0.0})
    for r in records:
        if not r["gpus"]:
            continue
        hours = r["est_wall_s"] / 3600
        entry = totals[r["node_type"]]
        entry["runs"] += 1
        entry["gpu_hours"] += hours * r["gpus"]
        entry["node_hours"] += hours
    for name, entry in totals.items():
        price = types[name].usd_per_hour if name in types else None
        entry["usd"] = None if price is None else entry["node_hours"] * price
    return dict(totals)


def warnings(records: list[dict]) -> list[str]:
    repeated = [r for r in records if r["epochs"] is not None and r["epochs"] > 1]
    if not repeated:
        return []
    worst = max(repeated, key=lambda r: r["epochs"])
    return [
        f"{len(repeated)} of {len(records)} runs see their data more than once (up to "
        f"{worst['epochs']:.3g} epochs, {worst['name']}): their D is not unique data; "
        "fit_scaling reports them and can fit the data-constrained law"
    ]


def branching_saving(cells: list[Cell]) -> str | None:
    """Compute of the branching plan next to training every cell from scratch."""
    if not any(c.role == Role.TRUNK for c in cells):
        return None
    branching = sum(c.own_compute.attention for c in cells)
    per_cell = sum(c.compute.attention for c in cells if c.role == Role.CELL)
    return (
        f"branching plan: {branching:.3g} FLOP; one run per cell: {per_cell:.3g} FLOP; "
        f"saving {1 - branching / per_cell:.0%} of the compute"
    )


def longest_chain_s(cells: list[Cell], records: list[dict]) -> float:
    """The sweep's floor on any cluster: its longest run, or a trunk with its longest branch
    after it (a branch starts only from its trunk's checkpoint)."""
    seconds = {r["name"]: r["est_wall_s"] for r in records}
    chains = [seconds[c.name] for c in cells]
    for branch in (c for c in cells if c.trunk is not None):
        trunk_to_branch = seconds[branch.trunk] * branch.branch_step / _steps(cells, branch.trunk)
        chains.append(trunk_to_branch + seconds[branch.name])
    return max(chains)


def _steps(cells: list[Cell], name: str) -> int:
    return next(c.plan.steps for c in cells if c.name == name)


def dry_run(cells: list[Cell], resources: SweepResources, as_json: bool = False) -> str:
    records = rows(cells, resources)
    hours = node_hours(records, resources.node_types)
    serial = sum(r["est_wall_s"] for r in records)
    chain = longest_chain_s(cells, records)
    summary = {
        "runs": len(records),
        "cells": sum(c.role == Role.CELL for c in cells),
        "flops_6nd": sum(c.own_compute.six_nd for c in cells),
        "flops_attention": sum(c.own_compute.attention for c in cells),
        "est_wall_s": max(serial / resources.max_concurrent, chain),
        "longest_chain_s": chain,
        "node_types": hours,
        "branching": branching_saving(cells),
        "warnings": warnings(records),
    }
    if as_json:
        return json.dumps({"runs": records, "summary": summary}, indent=2)
    table = pd.DataFrame(records).drop(columns=["n_params_total", "lr_multiplier"])
    table["est_wall_s"] = table["est_wall_s"].map(minutes)
    lines = [table.to_markdown(index=False, floatfmt=".3g"), ""]
    lines.append(
        f"{summary['runs']} runs ({summary['cells']} cells), {summary['flops_6nd']:.3g} FLOP "
        f"as 6ND, {summary['flops_attention']:.3g} with attention; about "
        f"{minutes(summary['est_wall_s'])} with {resources.max_concurrent} at once (at least "
        f"{minutes(chain)}: the longest run, with a trunk's longest branch after it)"
    )
    for name, entry in hours.items():
        cost = "" if entry["usd"] is None else f", about ${entry['usd']:,.0f}"
        lines.append(
            f"{name}: {entry['runs']} runs, {entry['gpu_hours']:.1f} GPU-hours, "
            f"{entry['node_hours']:.1f} node-hours{cost}"
        )
    if (saving := branching_saving(cells)) is not None:
        lines.append(saving)
    lines += [f"warning: {w}" for w in summary["warnings"]]
    return "\n".join(lines)
