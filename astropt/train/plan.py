"""A run's plan: exact batch and step arithmetic from its token budget, and what its data allows.

The plan is made once, by the driver, and shipped to the workers, which only check that they
are as many as it was made for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from astropt.compute import Compute, count_parameters, flops_per_token
from astropt.config import AUTO_ZERO2_PARAMS, StrictModel, TrainConfig


class PlanError(ValueError):
    """A training configuration that cannot be turned into whole optimizer steps."""


@dataclass(frozen=True)
class DataFacts:
    """What the driver knows about a run's data; counts are None when it cannot read them (a
    dry run before the data exists)."""

    train_images: int | None
    val_images: int | None
    fingerprint: str = ""


class TrainPlan(StrictModel):
    tokens_per_image: int
    world_size: int
    global_batch_images: int
    micro_batch_images: int
    grad_accum: int
    steps: int
    warmup_steps: int
    lr: float
    n_params: int
    n_params_total: int
    flops_per_token_6n: float
    flops_per_token_attention: float
    zero_stage: int
    train_images: int | None
    val_batches: int
    final_val_batches: int
    data_in_memory: bool
    data_fingerprint: str

    @property
    def global_batch_tokens(self) -> int:
        return self.global_batch_images * self.tokens_per_image

    @property
    def tokens_seen(self) -> int:
        """Tokens the run trains on: whole global batches, never more than the budget."""
        return self.steps * self.global_batch_tokens

    def tokens_at(self, step: int) -> int:
        return step * self.global_batch_tokens

    @property
    def unique_tokens(self) -> int | None:
        """Tokens in one pass over the training set."""
        return None if self.train_images is None else self.train_images * self.tokens_per_image

    def epochs_at(self, step: int) -> float | None:
        unique = self.unique_tokens
        return None if unique is None else self.tokens_at(step) / unique

    def compute_at(self, step: int) -> Compute:
        tokens = self.tokens_at(step)
        return Compute(
            six_nd=self.flops_per_token_6n * tokens,
            attention=self.flops_per_token_attention * tokens,
        )

    @property
    def compute(self) -> Compute:
        return self.compute_at(self.steps)


def _batch_split(images: int, world_size: int, micro_cap: int) -> tuple[int, int]:
    """(micro-batch images, accumulation steps) per worker: the largest micro-batch of at most
    `micro_cap` whose whole steps give between 99% and 100% of `images` (never more, so a rule's
    minimum number of steps holds)."""
    per_worker = max(1, images // world_size)
    enough = math.ceil(0.99 * per_worker)
    for micro in range(min(micro_cap, per_worker), 0, -1):
        if micro * (per_worker // micro) >= enough:
            return micro, per_worker // micro
    return 1, per_worker


def make_plan(cfg: TrainConfig, world_size: int, data: DataFacts) -> TrainPlan:
    """Whole optimizer steps from the token budget, with the batch, learning rate and warmup of
    a resolved configuration (`astropt.hparams` turns the grid's rules into fixed values).

    The global batch is `global_batch_tokens` in whole images, split over the workers into the
    fewest micro-batches of at most `micro_batch_images` (accumulated); the split can round the
    global batch by a few images, and the plan reports the batch actually used.
    """
    training = cfg.training
    if not isinstance(training.global_batch_tokens, int) or not isinstance(training.lr, float):
        raise TypeError("make_plan needs resolved values: run astropt.hparams.resolve first")
    tokens_per_image = cfg.model.image.tokens_per_image
    images = round(training.global_batch_tokens / tokens_per_image)
    micro, accum = _batch_split(images, world_size, training.micro_batch_images)
    global_images = micro * accum * world_size
    batch_tokens = global_images * tokens_per_image
    steps = cfg.tokens // batch_tokens
    if steps < 1:
        raise PlanError(
            f"tokens: budget {cfg.tokens:,} is smaller than one global batch of "
            f"{batch_tokens:,} tokens ({global_images} images x {tokens_per_image} tokens per "
            f"image on {world_size} workers); raise tokens or lower global_batch_tokens"
        )
    counts = count_parameters(cfg.model)
    per_token = flops_per_token(cfg.model)
    return TrainPlan(
        tokens_per_image=tokens_per_image,
        world_size=world_size,
        global_batch_images=global_images,
        micro_batch_images=micro,
        grad_accum=accum,
        steps=steps,
        warmup_steps=min(steps - 1, _warmup_steps(cfg, steps)),
        lr=training.lr,
        n_params=counts.non_embedding,
        n_params_total=counts.total,
        flops_per_token_6n=per_token.six_nd,
        flops_per_token_attention=per_token.attention,
        zero_stage=_zero_stage(cfg, world_size, counts.total),
        train_images=data.train_images,
        val_batches=_val_batches(cfg, data, cfg.training.eval_batches),
        final_val_batches=_val_batches(
            cfg, data, cfg.training.final_eval_batches or cfg.training.eval_batches
        ),
        data_in_memory=_fits_in_memory(cfg, world_size, data),
        data_fingerprint=data.fingerprint,
    )


def _warmup_steps(cfg: TrainConfig, steps: int) -> int:
    warmup = cfg.training.warmup
    count = warmup.steps if warmup.steps is not None else round(warmup.fraction * steps)
    return max(1, min(count, warmup.max_steps or count))


def _zero_stage(cfg: TrainConfig, world_size: int, n_params_total: int) -> int:
    """The configured ZeRO stage, or for "auto": 2 where sharding saves real memory (several
    workers, a model of AUTO_ZERO2_PARAMS or more), else 0."""
    stage = cfg.training.zero_stage
    if stage != "auto":
        return stage
    return 2 if world_size > 1 and n_params_total >= AUTO_ZERO2_PARAMS else 0


def _val_batches(cfg: TrainConfig, data: DataFacts, wanted: int) -> int:
    """Validation batches an evaluation uses: `wanted`, or as many as the set holds."""
    training = cfg.training
    if data.val_images is None:
        return wanted
    batches = min(wanted, data.val_images // training.eval_batch_images)
    if batches < 1:
        raise PlanError(
            f"eval_batch_images: the validation set {cfg.val_uri} has {data.val_images} images, "
            f"fewer than one validation batch of {training.eval_batch_images}"
        )
    return batches


def _fits_in_memory(cfg: TrainConfig, world_size: int, data: DataFacts) -> bool:
    """Whether a worker's share of the training set fits `data.memory_mb`."""
    if data.train_images is None:
        return False
    micro = cfg.training.micro_batch_images
    if data.train_images < world_size * micro:
        raise PlanError(
            f"data.train: {cfg.train_uri} has {data.train_images} images, fewer than one "
            f"micro-batch of {micro} for each of {world_size} workers"
        )
    share_mb = data.train_images / world_size * math.prod(cfg.model.image.shape) / 2**20
    return share_mb <= cfg.data.memory_mb
