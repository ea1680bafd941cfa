"""A grid expanded into cells: one training run each, named deterministically from its config.

Each cell's configuration is one `TrainConfig` validation of the grid's sections with the
hyper-parameters its rules give it (`astropt.hparams`); its plan is made here, once, and shipped
to its workers. In branching mode a size's cells share one trunk (`branch_cells`; how branches
wait for it and inherit its history is `astropt.sweep.branching`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from astropt.compute import Compute, count_parameters
from astropt.config import ModelConfig, ResourcesConfig, TrainConfig, Warmup
from astropt.hparams import Choice, RuleError, resolve, table_lr
from astropt.record import Role
from astropt.schedule import cooldown_start
from astropt.sweep.grid import CustomSize, GridConfig, GridError, label_of
from astropt.train.plan import DataFacts, PlanError, TrainPlan, make_plan


@dataclass(frozen=True)
class Cell:
    """One run of the sweep: a grid point (role cell), or a branching trunk (role trunk)."""

    name: str
    size: str
    train: TrainConfig
    plan: TrainPlan
    resources: ResourcesConfig
    role: Role = Role.CELL
    trunk: str | None = None  # the trunk a branch starts from ...
    branch_step: int | None = None  # ... at this optimizer step

    @property
    def compute(self) -> Compute:
        """Training FLOPs of the tokens the cell's model has seen at its end."""
        return self.plan.compute

    @property
    def own_tokens(self) -> int:
        """Tokens this run trains itself (a branch only its cooldown; the trunk did the rest)."""
        return self.plan.tokens_seen - self.plan.tokens_at(self.branch_step or 0)

    @property
    def own_compute(self) -> Compute:
        shared = self.plan.compute_at(self.branch_step or 0)
        total = self.compute
        return Compute(total.six_nd - shared.six_nd, total.attention - shared.attention)


def cell_name(label: str, tokens: int, seed: int, train: TrainConfig) -> str:
    """`<label>-D<tokens>-s<seed>[-lrx<multiplier>]-<hash>`: readable, and changes when a
    setting changes.

    The hash covers every setting that differs from its default, except where the data lives
    and how workers hold it: adding sizes or budgets to a grid (or new options to this code)
    leaves existing cells' names, and so their finished runs, untouched.
    """
    settings = train.model_dump(
        mode="json",
        exclude={"data": {"root", "train", "val", "memory_mb", "train_images"}},
        exclude_defaults=True,
    )
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    multiplier = "" if train.lr_multiplier == 1 else f"-lrx{train.lr_multiplier:g}"
    return f"{label}-D{tokens:.3g}-s{seed}{multiplier}-{digest}".replace("+", "")


@dataclass(frozen=True)
class SizeSpec:
    """What the rules need about one size of the grid, at one seed and learning-rate multiplier."""

    label: str
    model: ModelConfig
    resources: ResourcesConfig
    base_lr: float
    seed: int
    multiplier: float


def cell_config(
    grid: GridConfig,
    spec: SizeSpec,
    choice: Choice,
    tokens: int,
    schedule: str | None = None,
    keep_steps: tuple[int, ...] = (),
) -> TrainConfig:
    """The cell's configuration: the grid's sections with its resolved hyper-parameters."""
    optim = grid.training.optim
    if schedule is not None:
        optim = optim.model_copy(update={"schedule": schedule})
    resolved = {
        "global_batch_tokens": choice.global_batch_tokens,
        "lr": choice.lr,
        "warmup": Warmup(steps=choice.warmup_steps),
        "optim": optim,
    }
    return TrainConfig(
        model=spec.model,
        data=grid.data,
        training=grid.training.model_copy(update=resolved),
        tokens=max(tokens, 1),
        seed=spec.seed,
        lr_multiplier=spec.multiplier,
        keep_steps=keep_steps,
    )


def plan_cell(train: TrainConfig, spec: SizeSpec, facts: DataFacts) -> TrainPlan:
    try:
        return make_plan(train, spec.resources.workers, facts)
    except PlanError as error:
        raise GridError(f"budgets: size {spec.label} at {train.tokens:,} tokens: {error}") from None


def choose(grid: GridConfig, spec: SizeSpec, budgets: list[int], name: str) -> Choice:
    try:
        return resolve(
            grid.training,
            spec.model,
            cell=name,
            base_lr=spec.base_lr,
            budgets=budgets,
            world_size=spec.resources.workers,
            multiplier=spec.multiplier,
        )
    except RuleError as error:
        raise GridError(f"training: {error}") from None


def per_cell(grid: GridConfig, spec: SizeSpec, budgets: list[int], facts: DataFacts) -> list[Cell]:
    cells = []
    for tokens in budgets:
        label = f"{spec.label} at {tokens:,} tokens"
        train = cell_config(grid, spec, choose(grid, spec, [tokens], label), tokens)
        name = cell_name(spec.label, tokens, spec.seed, train)
        cells.append(Cell(name, spec.label, train, plan_cell(train, spec, facts), spec.resources))
    return cells


def size_specs(grid: GridConfig, size: str | CustomSize) -> list[SizeSpec]:
    label = label_of(size)
    model = grid.model_for(size)
    base_lr = table_lr(label, model, size.lr if isinstance(size, CustomSize) else None)
    resources = grid.resources.for_size(label)
    return [
        SizeSpec(label, model, resources, base_lr, seed, multiplier)
        for seed in grid.seeds
        for multiplier in grid.lr_multipliers
    ]


def branch_cells(
    grid: GridConfig, spec: SizeSpec, budgets: list[int], facts: DataFacts
) -> list[Cell]:
    """A constant-LR trunk to the last cooldown start, and a WSD branch per budget (Hagele et
    al. 2024). Batch, learning rate and warmup are chosen once for the size, so that every
    branch's schedule equals the trunk's until its own cooldown starts."""
    choice = choose(grid, spec, budgets, f"{spec.label} (branching, all budgets)")
    branches = []
    for tokens in budgets:
        train = cell_config(grid, spec, choice, tokens, schedule="wsd")
        plan = plan_cell(train, spec, facts)
        step = cooldown_start(plan.steps, grid.training.optim.cooldown_fraction)
        branches.append((cell_name(spec.label, tokens, spec.seed, train), train, plan, step))
    steps = tuple(sorted({step for *_, step in branches}))
    trunk_tokens = steps[-1] * branches[0][2].global_batch_tokens
    train = cell_config(grid, spec, choice, trunk_tokens, schedule="constant", keep_steps=steps)
    trunk = Cell(
        cell_name(f"{spec.label}-trunk", trunk_tokens, spec.seed, train),
        spec.label,
        train,
        plan_cell(train, spec, facts),
        spec.resources,
        role=Role.TRUNK,
    )
    return [trunk] + [
        Cell(name, spec.label, train, plan, spec.resources, trunk=trunk.name, branch_step=step)
        for name, train, plan, step in branches
    ]


def expand(grid: GridConfig, facts: DataFacts) -> list[Cell]:
    """All runs of the grid: trunks first, then the most expensive cells first."""
    make = branch_cells if grid.mode == "branching" else per_cell
    cells = []
    for size in grid.sizes:
        for spec in size_specs(grid, size):
            n_params = count_parameters(spec.model).non_embedding
            budgets = grid.budgets_for(size).for_size(n_params)
            cells += make(grid, spec, budgets, facts)
    return sorted(cells, key=lambda c: (c.role != Role.TRUNK, -c.compute.six_nd, c.name))
