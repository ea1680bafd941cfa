"""The grid file: model sizes x token budgets (or IsoFLOP budgets), validated into typed config.

Every error names the key and what was expected; unknown keys are errors, so a typo never
silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from astropt.config import (
    DATA_MEMORY_MB,
    PRESETS,
    DivergenceConfig,
    ModelConfig,
    OptimConfig,
    ResourcesConfig,
    StrictModel,
    TrackingConfig,
    ZeroStage,
    absolute_uri,
)

#: Peak learning rate per preset. Smaller models tolerate larger rates; from 89M up these follow
#: GPT-3's size ladder (Brown et al. 2020, Table 2.1: 6e-4 at 125M down to 1.6e-4 at 2.7B).
DEFAULT_LR = {
    "1M": 1e-3,
    "5M": 1e-3,
    "12M": 8e-4,
    "21M": 8e-4,
    "89M": 6e-4,
    "309M": 3e-4,
    "830M": 2.5e-4,
    "2.1B": 1.6e-4,
}
FALLBACK_LR = 6e-4


def _number(value: object) -> object:
    """YAML reads `1e6` as a string; accept it (and `2_000_000`) as a number."""
    if isinstance(value, str):
        try:
            return float(value.replace("_", ""))
        except ValueError:
            return value
    return value


Number = Annotated[PositiveFloat, BeforeValidator(_number)]


class CustomSize(StrictModel):
    name: str
    n_layer: PositiveInt
    n_head: PositiveInt
    n_embd: PositiveInt
    lr: PositiveFloat | None = None


class Budgets(StrictModel):
    """Exactly one of: absolute token counts, tokens per parameter, or IsoFLOP budgets."""

    tokens: list[Number] | None = None
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


class SyntheticData(StrictModel):
    """Generate this synthetic set into `data.root` when it is missing."""

    images: PositiveInt = 6000
    seed: int = 0


class GridData(StrictModel):
    """Shard sets: `train` and `val` (local folders or s3:// URIs), or a `root` holding both."""

    root: str | None = None
    train: str | None = None
    val: str | None = None
    synthetic: SyntheticData | None = None
    check: Literal["full", "structure"] = "full"
    memory_mb: NonNegativeInt = DATA_MEMORY_MB  # see DataConfig.memory_mb

    @model_validator(mode="after")
    def _where(self) -> GridData:
        if self.root is None and (self.train is None or self.val is None):
            raise ValueError(
                "set data.root (holding train/ and val/) or both data.train and data.val"
            )
        if self.synthetic is not None and self.root is None:
            raise ValueError("data.synthetic needs data.root: the folder to generate into")
        return self

    @property
    def train_uri(self) -> str:
        return self.train or f"{self.root.rstrip('/')}/train"

    @property
    def val_uri(self) -> str:
        return self.val or f"{self.root.rstrip('/')}/val"


class ImageConfig(StrictModel):
    image_size: PositiveInt = 64
    patch_size: PositiveInt = 16
    n_chan: PositiveInt = 3
    bias: bool = False


class TrainingConfig(StrictModel):
    """Hyper-parameters shared by every cell; `lr` per size comes from the size or the ladder."""

    global_batch_tokens: PositiveInt = 960
    micro_batch_images: PositiveInt = 32
    zero_stage: ZeroStage = "auto"
    optim: OptimConfig = OptimConfig()
    lr_scale: PositiveFloat = 1.0
    eval_every: PositiveInt = 50
    eval_batches: PositiveInt = 4
    eval_batch_images: PositiveInt = 64
    checkpoint_every: PositiveInt = 50
    log_every: PositiveInt = 10
    divergence: DivergenceConfig = DivergenceConfig()


class ProbeStep(StrictModel):
    """Linear probes of the validation set's metadata at the end of every finished cell."""

    targets: list[str] | None = Field(None, description="default: every numeric column")
    max_images: PositiveInt = 2000
    folds: int = Field(5, ge=2)


class SweepResources(ResourcesConfig):
    max_concurrent: PositiveInt = 1
    max_failures: int = Field(1, ge=0)


class GridConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    sizes: list[str | CustomSize] = Field(min_length=1)
    budgets: Budgets
    seeds: list[int] = Field([0], min_length=1)
    data: GridData
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
        """Ray storage as an absolute path (Ray requires one) or a URI such as s3://..."""
        return absolute_uri(self.storage)

    @model_validator(mode="after")
    def _known_sizes(self) -> GridConfig:
        for index, size in enumerate(self.sizes):
            if isinstance(size, str) and size not in PRESETS:
                raise ValueError(
                    f"sizes[{index}]: unknown preset {size!r}; expected one of "
                    f"{', '.join(PRESETS)} or a mapping with name, n_layer, n_head, n_embd"
                )
        for size in self.sizes:
            self.model_for(size)  # shape errors (heads, patch size) surface here
        return self

    def model_for(self, size: str | CustomSize) -> ModelConfig:
        shape = self.image.model_dump()
        if isinstance(size, str):
            return ModelConfig.from_preset(size, **shape)
        return ModelConfig(
            n_layer=size.n_layer, n_head=size.n_head, n_embd=size.n_embd, preset=size.name, **shape
        )

    def lr_for(self, size: str | CustomSize) -> float:
        base = size.lr if isinstance(size, CustomSize) else None
        if base is None:
            base = DEFAULT_LR.get(size if isinstance(size, str) else size.name, FALLBACK_LR)
        return base * self.training.lr_scale


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
        raise GridError(f"{path}:\n{_describe(error)}") from None


def _describe(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {where}: {message}" if where else f"  {message}")
    return "\n".join(lines)
