"""`--dry-run`: every run of the grid as a table or JSON, with its epochs, compute both ways, the
GPUs and node type it asks for, a rough wall time, and GPU-hours (and cost) per node type.

Times are `astropt.sweep.progress.Costs`: on CPUs, a few timed steps of the grid's smallest and
largest models on this machine; on GPUs, an assumed fraction of the GPU's peak. The sweep's ETA
starts from the same costs and refits them on the runs it has done.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import defaultdict

import pandas as pd
import torch

from astropt.compute import PEAK_BF16_FLOPS
from astropt.config import ModelConfig, ResourcesConfig
from astropt.model import AstroPT
from astropt.patches import images_to_tokens
from astropt.record import Role
from astropt.sweep.cells import Cell
from astropt.sweep.grid import NodeType, SweepResources
from astropt.sweep.progress import Costs, minutes

#: Fixed cost of one run on a 2-core CPU machine: in the trial's process (one CPU worker), or a
#: worker group; see benchmarks/README.md (sweep overhead).
STARTUP_S = {True: 1.0, False: 24.0}
#: Fraction of peak a GPU run sustains, and the GPU assumed when the grid names no node type.
GPU_MFU, ASSUMED_GPU = 0.35, "A100"
CALIBRATION_STEPS = 5


def _seconds_per_token(model: ModelConfig, micro: int, threads: int) -> float:
    """The median time of a few AdamW steps of `model` on one micro-batch, per token."""
    torch.manual_seed(0)
    net = AstroPT(model)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    images = torch.randint(0, 256, (micro, *model.image.shape), dtype=torch.uint8)
    tokens = images_to_tokens(images, model.image.patch_size)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    times = []
    try:
        for _ in range(CALIBRATION_STEPS + 1):  # the first step allocates: left out
            started = time.perf_counter()
            AstroPT.loss(net(tokens), tokens[:, 1:]).backward()
            optimizer.step()
            optimizer.zero_grad()
            times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times[1:]) / (micro * tokens.shape[1])


def calibrate_cpu(cells: list[Cell]) -> Costs:
    """Per-token costs on this machine from the grid's smallest and largest models."""
    by_flops = sorted(cells, key=lambda c: c.plan.flops_per_token_attention)
    ends = [by_flops[0], by_flops[-1]]
    resources = ends[-1].resources
    threads = resources.threads_per_worker or max(1, math.ceil(resources.cpus_per_worker))
    flops = [c.plan.flops_per_token_attention for c in ends]
    seconds = [_seconds_per_token(c.train.model, c.plan.micro_batch_images, threads) for c in ends]
    start = STARTUP_S[resources.trains_in_process(local_cluster=True)]
    if flops[1] > flops[0] and seconds[1] > seconds[0]:
        rate = (flops[1] - flops[0]) / (seconds[1] - seconds[0])
        return Costs(start, max(0.0, seconds[0] - flops[0] / rate), rate)
    return Costs(start, 0.0, flops[1] / seconds[1])


def node_type(resources: ResourcesConfig, sweep: SweepResources) -> tuple[str, NodeType]:
    """The node type a run is booked on (or, with none declared, an assumed one)."""
    booked = sweep.node_type_for(resources)
    if booked is not None:
        return booked
    gpus = round(resources.workers * resources.gpus_per_worker)
    return f"{gpus} x {ASSUMED_GPU} (assumed)", NodeType(gpus=gpus)


def run_costs(resources: ResourcesConfig, sweep: SweepResources, cpu: Costs | None) -> Costs:
    """A run's costs: the CPU calibration, or its GPUs at GPU_MFU of their peak."""
    if not resources.use_gpu:
        assert cpu is not None, "a CPU run needs the CPU calibration"
        return cpu
    _, node = node_type(resources, sweep)
    peak = PEAK_BF16_FLOPS.get(node.gpu, PEAK_BF16_FLOPS[ASSUMED_GPU])
    rate = GPU_MFU * peak * resources.workers * resources.gpus_per_worker
    return Costs(STARTUP_S[False], 0.0, rate)


def sweep_costs(cells: list[Cell], resources: SweepResources) -> Costs:
    """The prior of the sweep's ETA (its first runs' costs)."""
    cpu = None if all(c.resources.use_gpu for c in cells) else calibrate_cpu(cells)
    return run_costs(cells[0].resources, resources, cpu)


def rows(cells: list[Cell], resources: SweepResources) -> list[dict[str, object]]:
    """One record per run, in the order the sweep starts them."""
    cpu = None if all(c.resources.use_gpu for c in cells) else calibrate_cpu(cells)
    out = []
    for c in cells:
        plan, res = c.plan, c.resources
        costs = run_costs(res, resources, cpu)
        seconds = costs.seconds(c.own_tokens, plan.flops_per_token_attention)
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
