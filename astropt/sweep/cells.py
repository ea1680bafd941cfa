"""A grid expanded into cells: one training run each, named deterministically from its config.

In branching mode (warmup-stable-decay, Hagele et al. 2024) each size and seed gets one trunk
run at constant learning rate, checkpointed where each budget's cooldown starts; every budget is
then a branch cell that resumes from its checkpoint and cools down to exactly its budget.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from astropt.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from astropt.model import count_parameters
from astropt.schedule import cooldown_start
from astropt.sweep.grid import CustomSize, GridConfig, GridError
from astropt.train.plan import PlanError, TrainPlan, make_plan


@dataclass(frozen=True)
class Cell:
    """One run of the sweep: a grid point (role "cell"), or a branching trunk (role "trunk")."""

    name: str
    size: str
    train: TrainConfig
    plan: TrainPlan
    role: str = "cell"
    trunk: str | None = None  # the trunk a branch starts from ...
    branch_step: int | None = None  # ... at this optimizer step

    @property
    def flops(self) -> float:
        """C = 6 N D with N non-embedding parameters and D the tokens actually trained on."""
        return 6.0 * self.plan.n_params * self.plan.tokens_seen

    @property
    def own_flops(self) -> float:
        return 6.0 * self.plan.n_params * self.own_tokens

    @property
    def own_tokens(self) -> int:
        """Tokens this run trains itself (a branch only its cooldown; the trunk did the rest)."""
        shared = (self.branch_step or 0) * self.plan.global_batch_tokens
        return self.plan.tokens_seen - shared


def _token_budgets(grid: GridConfig, n_params: int) -> list[int]:
    budgets = grid.budgets
    if budgets.tokens:
        return [int(t) for t in budgets.tokens]
    if budgets.tokens_per_param:
        return [int(k * n_params) for k in budgets.tokens_per_param]
    return [int(c / (6 * n_params)) for c in budgets.isoflops]


def cell_name(label: str, tokens: int, seed: int, train: TrainConfig) -> str:
    """`<label>-D<tokens>-s<seed>-<hash>`: readable, and changes when a setting changes.

    The hash covers every setting that differs from its default, except where the data lives
    and whether workers keep it in memory: adding sizes or budgets to a grid (or new options to
    this code) leaves existing cells' names, and so their finished runs, untouched.
    """
    settings = train.model_dump(
        mode="json", exclude={"data": {"train", "val", "memory_mb"}}, exclude_defaults=True
    )
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return f"{label}-D{tokens:.3g}-s{seed}-{digest}".replace("+", "")


def _train(grid: GridConfig, model: ModelConfig, optim: OptimConfig, tokens: int, seed: int,
           **extra: object) -> TrainConfig:  # fmt: skip
    t = grid.training
    shared = t.model_dump(include={
        "global_batch_tokens", "micro_batch_images", "zero_stage", "eval_every", "eval_batches",
        "eval_batch_images", "checkpoint_every", "log_every", "divergence",
    })  # fmt: skip
    data = DataConfig(
        train=grid.data.train_uri,
        val=grid.data.val_uri,
        check=grid.data.check,
        memory_mb=grid.data.memory_mb,
    )
    fields = {"model": model, "data": data, "tokens": max(tokens, 1), "optim": optim, "seed": seed}
    return TrainConfig(**shared, **fields, **extra)


def _plan(grid: GridConfig, label: str, train: TrainConfig) -> TrainPlan:
    try:
        return make_plan(train, grid.resources.workers)
    except PlanError as error:
        raise GridError(f"budgets: size {label} at {train.tokens:,} tokens: {error}") from None


def _per_cell(grid, label, model, optim, budgets, seed) -> list[Cell]:
    cells = []
    for tokens in budgets:
        train = _train(grid, model, optim, tokens, seed)
        cells.append(
            Cell(cell_name(label, tokens, seed, train), label, train, _plan(grid, label, train))
        )
    return cells


def _branching(grid, label, model, optim, budgets, seed) -> list[Cell]:
    """A constant-LR trunk to the last cooldown start, and a WSD branch per budget.

    Warmup is fixed in steps (that of the smallest budget) so that every branch's schedule
    equals the trunk's until its own cooldown starts.
    """
    smallest = _plan(grid, label, _train(grid, model, optim, min(budgets), seed))
    fixed = {"warmup_steps": round(optim.warmup_fraction * smallest.steps)}
    wsd = OptimConfig(**(optim.model_dump() | fixed | {"schedule": "wsd"}))
    branches = []
    for tokens in budgets:
        train = _train(grid, model, wsd, tokens, seed)
        plan = _plan(grid, label, train)
        step = cooldown_start(plan.steps, wsd.cooldown_fraction)
        branches.append((cell_name(label, tokens, seed, train), train, plan, step))
    steps = sorted({step for *_, step in branches})
    constant = OptimConfig(**(wsd.model_dump() | {"schedule": "constant"}))
    trunk_tokens = steps[-1] * smallest.global_batch_tokens
    train = _train(grid, model, constant, trunk_tokens, seed, checkpoint_at=steps)
    trunk = Cell(cell_name(f"{label}-trunk", trunk_tokens, seed, train), label, train,
                 _plan(grid, label, train), role="trunk")  # fmt: skip
    return [trunk] + [
        Cell(name, label, train, plan, trunk=trunk.name, branch_step=step)
        for name, train, plan, step in branches
    ]


def expand(grid: GridConfig) -> list[Cell]:
    """All runs of the grid: trunks first, then the most expensive cells first."""
    make = _branching if grid.mode == "branching" else _per_cell
    cells = []
    for size in grid.sizes:
        model = grid.model_for(size)
        label = size.name if isinstance(size, CustomSize) else size
        n_params = count_parameters(model).non_embedding
        optim = OptimConfig(**(grid.training.optim.model_dump() | {"lr": grid.lr_for(size)}))
        for seed in grid.seeds:
            cells += make(grid, label, model, optim, _token_budgets(grid, n_params), seed)
    return sorted(cells, key=lambda c: (c.role != "trunk", -c.flops, c.name))
