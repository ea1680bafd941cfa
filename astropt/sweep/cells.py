"""A grid expanded into cells: one training run each, named deterministically from its config."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from astropt.config import DataConfig, OptimConfig, TrainConfig
from astropt.model import count_parameters
from astropt.sweep.grid import CustomSize, GridConfig, GridError
from astropt.train.plan import PlanError, TrainPlan, make_plan


@dataclass(frozen=True)
class Cell:
    """One (size, budget, seed) point of the grid and the exact run that measures it."""

    name: str
    size: str
    train: TrainConfig
    plan: TrainPlan

    @property
    def flops(self) -> float:
        """C = 6 N D with N non-embedding parameters and D the tokens actually trained on."""
        return 6.0 * self.plan.n_params * self.plan.tokens_seen


def _token_budgets(grid: GridConfig, n_params: int) -> list[int]:
    budgets = grid.budgets
    if budgets.tokens:
        return [int(t) for t in budgets.tokens]
    if budgets.tokens_per_param:
        return [int(k * n_params) for k in budgets.tokens_per_param]
    return [int(c / (6 * n_params)) for c in budgets.isoflops]


def cell_name(size: str, tokens: int, seed: int, train: TrainConfig) -> str:
    """`<size>-D<tokens>-s<seed>-<hash>`: readable, and changes when any setting changes.

    The hash covers the whole run config except where the data lives, so adding sizes or budgets
    to a grid leaves the existing cells' names (and their finished runs) untouched.
    """
    settings = train.model_dump(mode="json", exclude={"data": {"train", "val"}})
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return f"{size}-D{tokens:.3g}-s{seed}-{digest}".replace("+", "")


def expand(grid: GridConfig) -> list[Cell]:
    """All cells of the grid, the most expensive first (so the long poles start early)."""
    cells = []
    t = grid.training
    data = DataConfig(train=grid.data.train_uri, val=grid.data.val_uri, check=grid.data.check)
    for size in grid.sizes:
        model = grid.model_for(size)
        label = size.name if isinstance(size, CustomSize) else size
        n_params = count_parameters(model).non_embedding
        optim = OptimConfig(**(t.optim.model_dump() | {"lr": grid.lr_for(size)}))
        for tokens in _token_budgets(grid, n_params):
            for seed in grid.seeds:
                train = TrainConfig(
                    model=model,
                    data=data,
                    tokens=max(tokens, 1),
                    global_batch_tokens=t.global_batch_tokens,
                    micro_batch_images=t.micro_batch_images,
                    optim=optim,
                    zero_stage=t.zero_stage,
                    seed=seed,
                    eval_every=t.eval_every,
                    eval_batches=t.eval_batches,
                    eval_batch_images=t.eval_batch_images,
                    checkpoint_every=t.checkpoint_every,
                    log_every=t.log_every,
                    divergence=t.divergence,
                )
                try:
                    plan = make_plan(train, grid.resources.workers)
                except PlanError as error:
                    raise GridError(
                        f"budgets: size {label} at {tokens:,} tokens: {error}"
                    ) from None
                cells.append(Cell(cell_name(label, tokens, seed, train), label, train, plan))
    return sorted(cells, key=lambda c: (-c.flops, c.name))
