"""Typed configuration: one tree for a model, its images, its data, its training and resources.

Everything a user can set is validated here, once, at the edge: unknown keys and bad values are
errors that name the field and what was expected. Each default lives here and nowhere else: the
grid file's `image`, `data` and `training` sections are these models, a cell's configuration is
a `TrainConfig` built from them in one validation call, and the train command's flags are
derived from them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from astropt.record import default_tracking_uri
from astropt.storage import absolute_uri

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


def _number(value: object) -> object:
    """YAML reads `1e6` as a string; accept it (and `2_000_000`) as a number."""
    if isinstance(value, str):
        try:
            return float(value.replace("_", ""))
        except ValueError:
            return value
    return value


def _whole(value: object) -> object:
    """A count written as `1e6` or `2_000_000`."""
    number = _number(value)
    return int(number) if isinstance(number, float) and number.is_integer() else number


Number = Annotated[PositiveFloat, BeforeValidator(_number)]
Count = Annotated[PositiveInt, BeforeValidator(_whole)]
Location = Annotated[str, AfterValidator(absolute_uri)]


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors, values are immutable after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageConfig(StrictModel):
    """The images a model reads and how they are cut into tokens."""

    image_size: PositiveInt = 64
    patch_size: PositiveInt = 16
    n_chan: PositiveInt = 3

    @model_validator(mode="after")
    def _check(self) -> ImageConfig:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of patch_size "
                f"({self.patch_size})"
            )
        if self.grid < 2:
            raise ValueError(
                f"image_size {self.image_size} with patch_size {self.patch_size} gives one patch; "
                "next-patch prediction needs at least 2"
            )
        return self

    @property
    def grid(self) -> int:
        """Patches along one side of the image."""
        return self.image_size // self.patch_size

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return self.n_chan, self.image_size, self.image_size

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * self.n_chan

    @property
    def tokens_per_image(self) -> int:
        """Positions the model reads: all patches but the last, each predicting its successor."""
        return self.grid * self.grid - 1


def _nest_image(data: Any) -> Any:
    """Weights exported before the image settings were nested still load."""
    if isinstance(data, dict) and "image" not in data:
        flat = {k: data[k] for k in ("image_size", "patch_size", "n_chan") if k in data}
        if flat:
            data = {k: v for k, v in data.items() if k not in flat} | {"image": flat}
    return data


class ModelConfig(StrictModel):
    """Shape of one astroPT model. `patch_bias` and `gelu` exist to load upstream astroPT's
    released weights exactly (its patch encoder/decoder have biases, its GELU is tanh)."""

    n_layer: PositiveInt
    n_head: PositiveInt
    n_embd: PositiveInt
    image: ImageConfig = ImageConfig()
    bias: bool = False
    patch_bias: bool = False
    gelu: Literal["exact", "tanh"] = "exact"
    preset: str | None = None

    _nested = model_validator(mode="before")(_nest_image)

    @model_validator(mode="after")
    def _check_heads(self) -> ModelConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
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


class OptimConfig(StrictModel):
    """AdamW and the shape of its learning-rate schedule (the peak rate and warmup are
    `TrainingConfig.lr` and `.warmup`).

    cosine: warmup, then cosine decay to lr * min_lr_ratio at the last step. wsd: warmup,
    constant, then a cooldown over the last `cooldown_fraction` of the steps (linear or 1-sqrt)
    to lr * min_lr_ratio. constant: warmup, then constant (a WSD trunk).
    """

    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0)
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    cooldown_fraction: float = Field(0.2, gt=0, le=1)
    cooldown_shape: Literal["linear", "1-sqrt"] = "linear"


class DeepSeekBatch(StrictModel):
    """Global batch from compute: B_opt = 0.2920 C^0.3271 tokens (DeepSeek LLM 2024, Eq. 1, C
    in FLOPs with attention), at most `max_tokens`."""

    rule: Literal["deepseek"]
    max_tokens: PositiveInt | None = None


class SqrtBatchLr(StrictModel):
    """The size's table rate at `reference_batch_tokens`, scaled by sqrt(batch / reference):
    the square-root rule for Adam (Malladi et al. 2022; Granziol et al. 2022)."""

    rule: Literal["sqrt_batch"]
    reference_batch_tokens: PositiveInt


class Warmup(StrictModel):
    """Linear warmup over a `fraction` of a cell's steps (in branching, of its size's shortest
    budget) or a fixed number of `steps`; clipped to at most `max_steps`, never below 1."""

    fraction: float | None = Field(None, gt=0, lt=1)
    steps: PositiveInt | None = None
    max_steps: PositiveInt | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Warmup:
        if (self.fraction is None) == (self.steps is None):
            raise ValueError("give exactly one of warmup.fraction or warmup.steps")
        return self


LrSetting = PositiveFloat | Literal["table", "deepseek"] | SqrtBatchLr
#: "auto": 0 (plain data parallel) on one worker or below AUTO_ZERO2_PARAMS, where ZeRO's
#: partitioning shards little and only costs time; 2 above.
ZeroStage = Literal[0, 1, 2, 3, "auto"]
AUTO_ZERO2_PARAMS = 250_000_000


class DivergenceConfig(StrictModel):
    """When a run is declared diverged: non-finite loss, or loss above spike_factor x its best."""

    spike_factor: float = Field(3.0, gt=1)
    min_steps: int = Field(10, ge=0)


class WatchdogConfig(StrictModel):
    """A run that makes no progress for this long fails with where it was stuck: its first
    step may take `first_step_s`; later steps `step_factor` x the slowest step seen, and at
    least `min_s`."""

    first_step_s: PositiveFloat = 900.0
    step_factor: PositiveFloat = 20.0
    min_s: PositiveFloat = 120.0


class StallForTest(StrictModel):
    """Rank 0 of every run of `size` sleeps `seconds` after its first optimizer step."""

    size: str
    seconds: PositiveFloat


class TrainingConfig(StrictModel):
    """How a model is trained: batch, learning rate, warmup and schedule, evaluation,
    checkpoints. Batch and learning rate take fixed values or rules (resolved per cell by
    `astropt.hparams`); a cell's own configuration holds the resolved values."""

    global_batch_tokens: Count | DeepSeekBatch = 960
    min_steps: PositiveInt = Field(1, description="shrink the global batch of shorter cells")
    allow_short: bool = Field(False, description="accept cells below min_steps, or unwarmed")
    micro_batch_images: PositiveInt = 32
    lr: LrSetting = "table"
    warmup: Warmup = Warmup(fraction=0.05)
    optim: OptimConfig = OptimConfig()
    zero_stage: ZeroStage = "auto"
    eval_every: PositiveInt = 50
    eval_batches: PositiveInt = 4
    final_eval_batches: PositiveInt | None = Field(
        None, description="batches of the last evaluation (final/val_loss); default eval_batches"
    )
    eval_batch_images: PositiveInt = 64
    checkpoint_every: PositiveInt = 50
    keep_checkpoints: PositiveInt = Field(2, description="latest checkpoints kept per run")
    log_every: PositiveInt = 10
    divergence: DivergenceConfig = DivergenceConfig()
    watchdog: WatchdogConfig = WatchdogConfig()
    stall_for_test: StallForTest | None = Field(
        None, description="testing the watchdog: make runs of one size hang after step 1"
    )


class SyntheticData(StrictModel):
    """A synthetic galaxy set, generated where it is missing (astropt.data.synth)."""

    images: PositiveInt = 12000
    seed: int = 0


class DataConfig(StrictModel):
    """Shard sets: `train` and `val` (local folders or s3:// URIs), or a `root` holding both, or
    a `synthetic` set (generated under data/synthetic/, named by what makes it)."""

    root: Location | None = None
    train: Location | None = None
    val: Location | None = None
    synthetic: SyntheticData | None = None
    check: Literal["full", "structure"] = "full"
    memory_mb: NonNegativeInt = Field(
        2048,
        description="a worker whose share of the training set is at most this many MB holds it "
        "in memory and draws each epoch as a permutation of it; 0: always stream",
    )
    train_images: PositiveInt | None = Field(
        None, description="images in the training set, for dry runs that cannot read it"
    )

    @model_validator(mode="after")
    def _where(self) -> DataConfig:
        explicit = self.train is not None and self.val is not None
        if self.root is None and not explicit and self.synthetic is None:
            raise ValueError(
                "set data.root (holding train/ and val/), both data.train and data.val, or "
                "data.synthetic"
            )
        if (self.train is None) != (self.val is None):
            raise ValueError("set both data.train and data.val, or neither")
        return self

    def placed(self, image: ImageConfig) -> DataConfig:
        """This configuration with a synthetic set's folder filled in (absolute, decided here
        in the driver: workers run in other directories): `data/synthetic/` named by what makes
        the set (and the generator's version), so two settings never share a folder."""
        if self.synthetic is None or self.root is not None or self.train is not None:
            return self
        from astropt.data.synth import GENERATOR_VERSION  # numpy and scipy: only when needed

        spec = self.synthetic
        name = f"{image.image_size}px-{spec.images}-seed{spec.seed}-v{GENERATOR_VERSION}"
        return self.model_copy(update={"root": absolute_uri(f"data/synthetic/{name}")})

    def uris(self) -> tuple[str, str]:
        """(train, val) shard set locations."""
        if self.train is not None and self.val is not None:
            return self.train, self.val
        assert self.root is not None, "placed() fills the root of a synthetic set"
        return f"{self.root.rstrip('/')}/train", f"{self.root.rstrip('/')}/val"


class TrainConfig(StrictModel):
    """One training run: a model, its data, how it trains, and its token budget."""

    model: ModelConfig
    data: DataConfig
    training: TrainingConfig = TrainingConfig()
    tokens: Count
    seed: int = 0
    lr_multiplier: PositiveFloat = Field(1.0, description="recorded: already applied to lr")
    keep_steps: tuple[PositiveInt, ...] = Field(
        (), description="checkpoints kept whatever keep_checkpoints says (branch points)"
    )

    @model_validator(mode="after")
    def _data_placed(self) -> TrainConfig:
        if self.data.root is None and self.data.train is None:
            raise ValueError("data.synthetic needs its folder: data.placed(image) fills it")
        return self

    @property
    def train_uri(self) -> str:
        return self.data.uris()[0]

    @property
    def val_uri(self) -> str:
        return self.data.uris()[1]


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

    accelerator_type: str | None = Field(
        None,
        description="GPU model each worker must run on (Ray's name, e.g. A10G, A100); a grid "
        "fills it from the node type a size is booked on (resources.node_types)",
    )
    in_process: bool | None = Field(
        None,
        description="train a one-worker CPU run inside its Tune trial's process (Ray Train's "
        "local mode: no worker group to start); default: on a local cluster this run started, "
        "not on a cluster it joined (where trials run on the head, which never trains)",
    )

    def trains_in_process(self, local_cluster: bool) -> bool:
        wanted = local_cluster if self.in_process is None else self.in_process
        return wanted and self.workers == 1 and not self.use_gpu


class TrackingConfig(StrictModel):
    """MLflow tracking store and experiment."""

    uri: str = Field(default_factory=default_tracking_uri)
    experiment: str = "astropt-default"
    final_wait_s: float = Field(
        50.0,
        ge=0,
        description="how long a finishing run keeps retrying an unreachable MLflow before it "
        "spools what MLflow lacks (astropt.spool upload sends it later)",
    )
