"""Exact batch arithmetic of a run: images per batch, accumulation and steps from a token budget."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from astropt.config import TrainConfig
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


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def make_plan(cfg: TrainConfig, world_size: int) -> TrainPlan:
    """Derive whole optimizer steps from the token budget.

    The global batch is `global_batch_tokens` rounded to whole images and to a multiple of the
    world size; each worker runs the largest micro-batch up to `micro_batch_images` that divides
    its share, and accumulates the rest.
    """
    tokens_per_image = cfg.model.block_size
    images = max(1, round(cfg.global_batch_tokens / tokens_per_image))
    global_images = max(world_size, round(images / world_size) * world_size)
    per_worker = global_images // world_size
    micro = _largest_divisor_at_most(per_worker, cfg.micro_batch_images)
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
        grad_accum=per_worker // micro,
        steps=steps,
        warmup_steps=round(cfg.optim.warmup_fraction * steps),
        n_params=counts.non_embedding,
        n_params_total=counts.total,
        flops_per_token=training_flops_per_token(cfg.model),
    )
