"""The grid file: model sizes x token budgets (x learning-rate multipliers x seeds).

Its `image`, `data` and `training` sections are `astropt.config`'s own models, so every setting
and default is declared once. Every error names the key and what was expected; unknown keys are
errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from astropt.config import (
    PRESETS,
    Count,
    DataConfig,
    ImageConfig,
    ModelConfig,
    Number,
    ResourcesConfig,
    StrictModel,
    TrackingConfig,
    TrainingConfig,
)
from astropt.storage import absolute_uri, join


class Budgets(StrictModel):
    """Exactly one of: absolute token counts, tokens per parameter, or IsoFLOP budgets."""

    tokens: list[Count] | None = None
    tokens_per_param: list[Number] | None = None
    isoflops: list[Number] | None = Field(None, description="FLOP budgets C; D = C / (6 N)")

    @model_validator(mode="after")
    def _exactly_one(self) -> Budgets:
        given = [k for k in ("tokens", "tokens_per_param", "isoflops") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of tokens, tokens_per_param or isoflops (a non-empty list); "
                f"got {given or 'none'}"
            )
        return self

    def for_size(self, n_params: int) -> list[int]:
        """Token budgets of a model with `n_params` non-embedding parameters."""
        if self.tokens:
            return list(self.tokens)
        if self.tokens_per_param:
            return [int(k * n_params) for k in self.tokens_per_param]
        return [int(c / (6 * n_params)) for c in self.isoflops]


class CustomSize(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    n_layer: PositiveInt
    n_head: PositiveInt
    n_embd: PositiveInt
    lr: PositiveFloat | None = None
    budgets: Budgets | None = Field(
        None,
        description="this size's own budgets instead of the grid's: e.g. the smallest sizes "
        "only at budgets where their many short steps stay affordable",
    )


class ProbeStep(StrictModel):
    """Linear probes of the validation set's metadata at the end of every finished cell."""

    targets: list[str] | None = Field(None, description="default: every numeric column")
    max_images: PositiveInt = 2000
    folds: int = Field(5, ge=2)


class NodeType(StrictModel):
    """A kind of machine of the cluster, for the dry run's GPU-hours (and cost, with a price)."""

    gpus: PositiveInt
    gpu: str = Field("A100", description="GPU model, for its peak FLOP/s (astropt.compute)")
    usd_per_hour: PositiveFloat | None = None


class SweepResources(ResourcesConfig):
    """Each cell's resources (`by_size` overrides them per size) and the sweep's."""

    max_concurrent: PositiveInt = 1
    max_failures: NonNegativeInt = 1
    by_size: dict[str, ResourcesConfig] = Field(
        default_factory=dict, description="per-size overrides, e.g. {309M: {workers: 8}}"
    )
    node_types: dict[str, NodeType] = Field(default_factory=dict)

    def for_size(self, label: str) -> ResourcesConfig:
        """A size's resources; on GPUs, with the GPU model of the node type it is booked on."""
        base = self.model_dump(include=set(ResourcesConfig.model_fields))
        override = self.by_size.get(label)
        extra = override.model_dump(exclude_unset=True) if override is not None else {}
        resources = ResourcesConfig(**(base | extra))
        if resources.use_gpu and resources.accelerator_type is None and self.node_types:
            node = self.node_type_for(resources)
            if node is not None:
                resources = resources.model_copy(update={"accelerator_type": node[1].gpu})
        return resources

    def node_type_for(self, resources: ResourcesConfig) -> tuple[str, NodeType] | None:
        """The smallest node type with the GPUs a run asks for, None if no type has them."""
        gpus = round(resources.workers * resources.gpus_per_worker)
        fitting = sorted((t.gpus, n) for n, t in self.node_types.items() if t.gpus >= gpus)
        return None if not fitting else (fitting[0][1], self.node_types[fitting[0][1]])


class GridConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    sizes: list[str | CustomSize] = Field(min_length=1)
    budgets: Budgets
    seeds: list[int] = Field([0], min_length=1)
    lr_multipliers: list[PositiveFloat] = Field([1.0], min_length=1)
    data: DataConfig
    image: ImageConfig = ImageConfig()
    training: TrainingConfig = TrainingConfig()
    resources: SweepResources = SweepResources()
    tracking: TrackingConfig = TrackingConfig()
    storage: str = "runs/ray"
    probe: ProbeStep | None = None
    mode: Literal["per_cell", "branching"] = Field(
        "per_cell",
        description="per_cell: one run per cell (training.optim.schedule, cosine by default); "
        "branching: one constant-LR trunk per size, a WSD cooldown branch per budget",
    )

    @property
    def storage_path(self) -> str:
        """This grid's folder of Ray storage, `<storage>/<name>`: its runs' checkpoints and Tune's
        state, as an absolute path (Ray requires one) or a URI such as s3://... Each grid has its
        own: two grids can hold cells of the same name (the same size, budget and settings), and
        one grid's finished runs must not stand in for the other's, whose branch points they no
        longer keep."""
        return join(absolute_uri(self.storage), self.name)

    @model_validator(mode="after")
    def _known_sizes(self) -> GridConfig:
        for index, size in enumerate(self.sizes):
            if isinstance(size, str) and size not in PRESETS:
                raise ValueError(
                    f"sizes[{index}]: unknown preset {size!r}; expected one of "
                    f"{', '.join(PRESETS)} or a mapping with name, n_layer, n_head, n_embd"
                )
        labels = [label_of(size) for size in self.sizes]
        if len(set(labels)) != len(labels):
            raise ValueError(f"sizes: each size needs its own name, got {labels}")
        unknown = set(self.resources.by_size) - set(labels)
        if unknown:
            raise ValueError(f"resources.by_size: {sorted(unknown)} are not sizes of this grid")
        for size in self.sizes:
            self.model_for(size)  # shape errors (heads) surface here
        return self.model_copy(update={"data": self.data.placed(self.image)})

    def budgets_for(self, size: str | CustomSize) -> Budgets:
        """The size's own budgets where it gives them, else the grid's."""
        own = size.budgets if isinstance(size, CustomSize) else None
        return own or self.budgets

    def model_for(self, size: str | CustomSize) -> ModelConfig:
        if isinstance(size, str):
            return ModelConfig.from_preset(size, image=self.image)
        shape = size.model_dump(include={"n_layer", "n_head", "n_embd"})
        return ModelConfig(**shape, image=self.image, preset=size.name)


def label_of(size: str | CustomSize) -> str:
    return size.name if isinstance(size, CustomSize) else size


class GridError(ValueError):
    """A grid file that cannot be run, with every problem named."""


def load_grid(path: str | Path) -> GridConfig:
    """Read and validate a grid YAML file (yaml.safe_load: no code runs from the file)."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise GridError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise GridError(f"{path}: expected a mapping of keys (name, sizes, budgets, data, ...)")
    try:
        return GridConfig.model_validate(raw)
    except ValidationError as error:
        raise GridError(f"{path}:\n{describe(error)}") from None


def describe(error: ValidationError) -> str:
    """Every problem of a validation error, one line each, named by its key. Where a value may
    take several forms (a preset name or a mapping), the form that got further is reported."""
    problems = [(tuple(p for p in e["loc"] if not _is_union_tag(p)), e) for e in error.errors()]
    deepest = [
        (loc, e)
        for loc, e in problems
        if not any(len(other) > len(loc) and other[: len(loc)] == loc for other, _ in problems)
    ]
    lines = []
    for loc, problem in deepest:
        where = ".".join(str(part) for part in loc)
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {where}: {message}" if where else f"  {message}")
    return "\n".join(dict.fromkeys(lines))


def _is_union_tag(part: object) -> bool:
    """Pydantic names the union member it tried (`int`, `DeepSeekBatch`, ...) in the location."""
    return isinstance(part, str) and (part[:1].isupper() or part in ("int", "float", "str"))
