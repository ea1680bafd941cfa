"""Exact batch arithmetic of a run: images per batch, accumulation and steps from a token budget."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from astropt.config import AUTO_ZERO2_PARAMS, TrainConfig
from astropt.model import count_parameters, training_flops_per_token


class PlanError(ValueError):
    """A training configuration that cannot be turned into whole optimizer steps."""


@dataclass(frozen=True)
class TrainPlan:
    tokens_per_image: int
    world_size: int
    global_batch_images: int
    micro_batch_images: int
    grad_accum: int
    steps: int
    warmup_steps: int
    n_params: int
    n_params_total: int
    flops_per_token: float
    zero_stage: int

    @property
    def global_batch_tokens(self) -> int:
        return self.global_batch_images * self.tokens_per_image

    @property
    def tokens_seen(self) -> int:
        """Tokens the run trains on: whole global batches, never more than the budget."""
        return self.steps * self.global_batch_tokens

    @property
    def flops(self) -> float:
        return self.flops_per_token * self.tokens_seen

    def as_params(self) -> dict[str, float | int]:
        return asdict(self) | {
            "global_batch_tokens": self.global_batch_tokens,
            "tokens_seen_planned": self.tokens_seen,
            "flops_budget": self.flops,
        }


def _batch_split(images: float, world_size: int, micro_cap: int) -> tuple[int, int]:
    """(micro-batch images, accumulation steps) per worker closest to `images` in all."""
    per_worker = max(1.0, images / world_size)
    accum = math.ceil(per_worker / micro_cap)
    return max(1, round(per_worker / accum)), accum


def _warmup_steps(cfg: TrainConfig, steps: int) -> int:
    if cfg.optim.warmup_steps is not None:
        return cfg.optim.warmup_steps
    return round(cfg.optim.warmup_fraction * steps)


def make_plan(cfg: TrainConfig, world_size: int) -> TrainPlan:
    """Derive whole optimizer steps from the token budget.

    The global batch is `global_batch_tokens` in whole images, split over the workers into the
    fewest micro-batches of at most `micro_batch_images` (accumulated); the split can round the
    global batch by a few images, and the plan reports the batch actually used.
    """
    tokens_per_image = cfg.model.block_size
    images = cfg.global_batch_tokens / tokens_per_image
    micro, accum = _batch_split(images, world_size, cfg.micro_batch_images)
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
    return TrainPlan(
        tokens_per_image=tokens_per_image,
        world_size=world_size,
        global_batch_images=global_images,
        micro_batch_images=micro,
        grad_accum=accum,
        steps=steps,
        warmup_steps=min(steps - 1, _warmup_steps(cfg, steps)),
        n_params=counts.non_embedding,
        n_params_total=counts.total,
        flops_per_token=training_flops_per_token(cfg.model),
        zero_stage=_zero_stage(cfg, world_size, counts.total),
    )


def _zero_stage(cfg: TrainConfig, world_size: int, n_params_total: int) -> int:
    """The configured ZeRO stage, or for "auto": 2 where sharding saves real memory (several
    workers, a model of AUTO_ZERO2_PARAMS or more), else 0."""
    if cfg.zero_stage != "auto":
        return cfg.zero_stage
    return 2 if world_size > 1 and n_params_total >= AUTO_ZERO2_PARAMS else 0
