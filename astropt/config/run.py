"""One run: its data, its whole configuration, what it asks of the cluster, where it is
recorded."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from astropt.config.fields import Count, Location, StrictModel
from astropt.config.model import ImageConfig, ModelConfig
from astropt.config.training import TrainingConfig
from astropt.record import default_tracking_uri
from astropt.storage import absolute_uri


class SyntheticData(StrictModel):
    """A synthetic galaxy set, generated where it is missing (astropt.data.synth)."""

    images: PositiveInt = 12000
    """galaxies in the set (about 10% go to validation)"""
    seed: int = 0
    """generator seed"""


class DataConfig(StrictModel):
    """Shard sets: `train` and `val` (local folders or s3:// URIs), or a `root` holding both, or
    a `synthetic` set (generated under data/synthetic/, named by what makes it)."""

    root: Location | None = None
    """folder or s3:// URI holding train/ and val/"""
    train: Location | None = None
    """training shard set (folder or s3:// URI)"""
    val: Location | None = None
    """validation shard set (folder or s3:// URI)"""
    synthetic: SyntheticData | None = None
    """generate a synthetic set under data/synthetic/ if missing, e.g. {images: 12000}"""
    check: Literal["full", "structure"] = "full"
    """before training: full (every image) or structure (schema and shapes)"""
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
    """the token budget D"""
    seed: int = 0
    """model initialisation and data order"""
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
    """Ray Train workers (data-parallel ranks) per run"""
    use_gpu: bool = False
    """one GPU per worker"""
    cpus_per_worker: PositiveFloat = 0.5
    """CPUs Ray reserves per worker"""
    gpus_per_worker: PositiveFloat = 1.0
    """GPUs Ray reserves per worker (with use_gpu)"""
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
    """MLflow tracking URI (a local SQLite file under runs/ by default)"""
    experiment: str = "astropt-default"
    """MLflow experiment of the runs"""
    final_wait_s: float = Field(
        50.0,
        ge=0,
        description="how long a finishing run keeps retrying an unreachable MLflow before it "
        "spools what MLflow lacks (astropt.spool upload sends it later)",
    )
