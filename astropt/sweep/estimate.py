"""`--dry-run`: the cells as a table, with a rough wall-time estimate for the resources at hand."""

from __future__ import annotations

import time

import pandas as pd
import torch

from astropt.sweep.cells import Cell
from astropt.sweep.grid import SweepResources

#: Measured start-up cost of one cell on a 2-core CPU machine (worker group, DeepSpeed, first
#: batch, MLflow); see benchmarks/README.md.
CELL_OVERHEAD_S = 40.0
#: Fraction of peak a cell sustains. On CPU, relative to a 512 x 512 float32 matmul: the
#: default grid trained at about that rate on 2 cores (benchmarks/README.md).
GPU_MFU, CPU_EFFICIENCY = 0.35, 1.0
#: Dense bf16 peak of an A100, the GPU assumed when the dry run cannot see the cluster's GPUs.
ASSUMED_GPU_PEAK = 312e12


def cpu_flops_per_s(seconds: float = 0.3) -> float:
    """This machine's float32 matmul rate, measured for a moment."""
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return n * 2 * 512**3 / (time.perf_counter() - start)


def cell_seconds(cell: Cell, resources: SweepResources, cpu_rate: float) -> float:
    if resources.use_gpu:
        rate = GPU_MFU * ASSUMED_GPU_PEAK * resources.workers * resources.gpus_per_worker
    else:
        rate = CPU_EFFICIENCY * cpu_rate
    return CELL_OVERHEAD_S + cell.own_tokens * cell.plan.flops_per_token / rate


def plan_table(cells: list[Cell], resources: SweepResources) -> pd.DataFrame:
    cpu_rate = 0.0 if resources.use_gpu else cpu_flops_per_s()
    return pd.DataFrame(
        {
            "cell": c.name,
            "size": c.size,
            "N (non-emb)": c.plan.n_params,
            "N (total)": c.plan.n_params_total,
            "role": c.role if c.trunk is None else f"branch@{c.branch_step}",
            "D (tokens)": c.plan.tokens_seen,
            "C = 6ND": c.flops,
            "steps": c.plan.steps,
            "est. wall": _minutes(cell_seconds(c, resources, cpu_rate)),
        }
        for c in cells
    )


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def branching_saving(cells: list[Cell]) -> str:
    """Tokens and FLOPs of the branching plan next to training every cell from scratch."""
    branching = sum(c.own_tokens for c in cells), sum(c.own_flops for c in cells)
    grid_cells = [c for c in cells if c.role == "cell"]
    per_cell = sum(c.plan.tokens_seen for c in grid_cells), sum(c.flops for c in grid_cells)
    return (
        f"branching plan: {branching[0]:.3g} tokens, {branching[1]:.3g} FLOP; one run per cell: "
        f"{per_cell[0]:.3g} tokens, {per_cell[1]:.3g} FLOP; saving "
        f"{1 - branching[1] / per_cell[1]:.0%} of the compute"
    )


def total_estimate(cells: list[Cell], resources: SweepResources) -> str:
    cpu_rate = 0.0 if resources.use_gpu else cpu_flops_per_s()
    serial = sum(cell_seconds(c, resources, cpu_rate) for c in cells)
    hardware = "GPU (A100-class assumed)" if resources.use_gpu else "this machine's CPU"
    return (
        f"{len(cells)} runs, {sum(c.own_flops for c in cells):.3g} FLOP in all; about "
        f"{_minutes(serial / resources.max_concurrent)} with {resources.max_concurrent} at once "
        f"on {hardware} (rough: {CELL_OVERHEAD_S:.0f} s start-up per cell plus FLOPs at "
        f"{GPU_MFU if resources.use_gpu else CPU_EFFICIENCY:.0%} of peak)"
    )
