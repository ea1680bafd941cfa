"""Typed configuration for a model, a training run and its resources.

Everything a user can set is validated here, once, at the edge: unknown keys and bad values are
errors that name the field and what was expected. Nothing below this layer re-checks its inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

#: The paper's size ladder (Smith et al. 2024, "AstroPT"): label -> (n_layer, n_head, n_embd).
PRESETS: dict[str, tuple[int, int, int]] = {
    "1M": (4, 8, 128),
    "5M": (6, 8, 256),
    "12M": (6, 8, 384),
    "21M": (6, 8, 512),
    "89M": (12, 12, 768),
    "309M": (24, 16, 1024),
    "830M": (16, 8, 2048),
    "2.1B": (26, 32, 2560),
}


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors, values are immutable after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(StrictModel):
    """Shape of one astroPT model and of the images it reads."""

    n_layer: PositiveInt
    n_head: PositiveInt
    n_embd: PositiveInt
    image_size: PositiveInt = 64
    patch_size: PositiveInt = 16
    n_chan: PositiveInt = 3
    bias: bool = False
    preset: str | None = None

    @model_validator(mode="after")
    def _check_shapes(self) -> ModelConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of patch_size "
                f"({self.patch_size})"
            )
        if self.n_patches < 2:
            raise ValueError(
                f"image_size {self.image_size} with patch_size {self.patch_size} gives one patch; "
                "next-patch prediction needs at least 2"
            )
        return self

    @classmethod
    def from_preset(cls, name: str, **overrides: object) -> ModelConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
        n_layer, n_head, n_embd = PRESETS[name]
        fields = {"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, "preset": name}
        return cls(**(fields | overrides))

    @property
    def name(self) -> str:
        return self.preset or f"L{self.n_layer}-H{self.n_head}-D{self.n_embd}"

    @property
    def grid(self) -> int:
        """Patches along one side of the image."""
        return self.image_size // self.patch_size

    @property
    def n_patches(self) -> int:
        return self.grid * self.grid

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the model reads."""
        return self.n_chan, self.image_size, self.image_size

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * self.n_chan

    @property
    def block_size(self) -> int:
        """Positions the model reads: all patches but the last, each predicting its successor."""
        return self.n_patches - 1


class OptimConfig(StrictModel):
    """AdamW and its learning-rate schedule.

    cosine: warmup, then cosine decay to lr * min_lr_ratio at the last step. wsd: warmup,
    constant, then a cooldown over the last `cooldown_fraction` of the steps (linear or 1-sqrt)
    to lr * min_lr_ratio. constant: warmup, then constant (a WSD trunk).
    """

    lr: PositiveFloat = 6e-4
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    warmup_steps: int | None = Field(None, ge=0, description="overrides warmup_fraction")
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0)
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    cooldown_fraction: float = Field(0.2, gt=0, le=1)
    cooldown_shape: Literal["linear", "1-sqrt"] = "linear"


DATA_MEMORY_MB = 2048  # 170k 64 x 64 galaxies, 2.7k at 512 x 512: real data sets stream


class DataConfig(StrictModel):
    """Where the train and validation shard sets live (local directories or s3:// URIs)."""

    train: Annotated[str, AfterValidator(absolute_uri)]
    val: Annotated[str, AfterValidator(absolute_uri)]
    check: Literal["full", "structure"] = "full"
    memory_mb: NonNegativeInt = Field(
        DATA_MEMORY_MB,
        description="a worker whose share of the training set is at most this many MB keeps it "
        "in memory after the first epoch and serves later epochs from there; 0: always stream",
    )


class DivergenceConfig(StrictModel):
    """When a run is declared diverged: non-finite loss, or loss above spike_factor x its best."""

    spike_factor: float = Field(3.0, gt=1)
    min_steps: int = Field(10, ge=0)


#: "auto": 0 (plain data parallel) on one worker or below AUTO_ZERO2_PARAMS, where ZeRO's
#: partitioning shards little and only costs time (24-33% for the 1M preset on CPU); 2 above.
ZeroStage = Literal[0, 1, 2, 3, "auto"]
AUTO_ZERO2_PARAMS = 250_000_000


class TrainConfig(StrictModel):
    """One training run: a model, a token budget, the data and the optimiser."""

    model: ModelConfig
    data: DataConfig
    tokens: PositiveInt
    global_batch_tokens: PositiveInt = 960
    micro_batch_images: PositiveInt = 32
    optim: OptimConfig = OptimConfig()
    zero_stage: ZeroStage = "auto"
    seed: int = 0
    eval_every: PositiveInt = 50
    eval_batches: PositiveInt = 4
    eval_batch_images: PositiveInt = 64
    checkpoint_every: PositiveInt = 50
    checkpoint_at: list[PositiveInt] = Field(
        default_factory=list, description="extra steps to checkpoint and keep (branch points)"
    )
    log_every: PositiveInt = 10
    divergence: DivergenceConfig = DivergenceConfig()


class ResourcesConfig(StrictModel):
    """What one run asks of the Ray cluster."""

    workers: PositiveInt = 2
    use_gpu: bool = False
    cpus_per_worker: PositiveFloat = 0.5
    gpus_per_worker: PositiveFloat = 1.0
    threads_per_worker: PositiveInt | None = Field(
        None,
        description="torch threads per worker; default: cpus_per_worker rounded up. More than "
        "that lets a worker use the cores it leaves to Ray Data, which are idle between reads",
    )


class TrackingConfig(StrictModel):
    """MLflow tracking store and experiment."""

    uri: str = Field(default_factory=lambda: default_tracking_uri())
    experiment: str = "astropt-default"
    final_wait_s: float = Field(
        50.0,
        ge=0,
        description="how long a finishing run keeps retrying an unreachable MLflow before it "
        "spools what MLflow lacks (astropt.spool upload sends it later)",
    )


def absolute_uri(uri: str) -> str:
    """A URI (s3://...) as is, a local path made absolute: workers run in other directories."""
    return uri if "://" in uri else str(Path(uri).resolve())


def default_tracking_uri(root: Path | None = None) -> str:
    """A local SQLite store under ./runs (MLflow 3 refuses a bare ./mlruns file store)."""
    path = (root or Path.cwd()) / "runs" / "mlflow.db"
    return f"sqlite:///{path.resolve()}"
