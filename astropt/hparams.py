"""Per-cell hyper-parameters from the grid's rules: global batch, peak learning rate, warmup.

Rules (chosen in the grid's `training` section; fixed values are the simplest rule):

- `global_batch_tokens`: a number, or `{rule: deepseek}`: B_opt(C) = 0.2920 C^0.3271 tokens
  (DeepSeek LLM, Bi et al. 2024, Eq. 1), C the run's training FLOPs with attention. Either way
  `min_steps` then shrinks the batch of cells that would take fewer optimizer steps.
- `lr`: a number; `table`: the size's own `lr` or upstream astroPT's per-size rate (its config
  files: 1e-3 for 1M-21M, 6e-4 for 89M, 3e-4 for 309M and 830M, 1.6e-4 for 2.1B, at 327,680
  tokens per step; a custom size takes the preset nearest in N); `{rule: sqrt_batch,
  reference_batch_tokens: B0}`: the table rate times sqrt(B / B0), the square-root scaling of
  Adam's rate with batch (Malladi et al. 2022); `deepseek`: lr_opt(C) = 0.3118 C^-0.1250 (DeepSeek
  LLM, Eq. 1). The grid's `lr_multipliers` then multiply it.
- `warmup`: a fraction of the cell's steps or fixed steps, at most `max_steps`, never below 1.

In branching mode one trunk serves every budget of a size, so the rules are evaluated once per
size: compute-dependent rules at the geometric mean of its budgets' compute, `min_steps` and the
warmup fraction against its shortest budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from astropt.compute import count_parameters, flops_per_token
from astropt.config import PRESETS, DeepSeekBatch, ModelConfig, SqrtBatchLr, TrainingConfig

#: Peak learning rate per preset in upstream astroPT's training configs (Smith42/astroPT,
#: paper-era `config/` files), all at 327,680 tokens per optimizer step.
UPSTREAM_LR = {
    "1M": 1e-3,
    "5M": 1e-3,
    "12M": 1e-3,
    "21M": 1e-3,
    "89M": 6e-4,
    "309M": 3e-4,
    "830M": 3e-4,
    "2.1B": 1.6e-4,
}
UPSTREAM_BATCH_TOKENS = 327_680
DEEPSEEK_BATCH = (0.2920, 0.3271)  # B_opt = k C^e, tokens
DEEPSEEK_LR = (0.3118, -0.1250)  # lr_opt = k C^e


class RuleError(ValueError):
    """A rule that cannot give a cell a sound schedule; the message names the cell and rule."""


@dataclass(frozen=True)
class Choice:
    """A cell's resolved hyper-parameters."""

    global_batch_tokens: int
    lr: float
    warmup_steps: int


def table_lr(label: str, model: ModelConfig, own_lr: float | None) -> float:
    """The size's own rate, else upstream's for its preset, else the preset nearest in N."""
    if own_lr is not None:
        return own_lr
    if label in UPSTREAM_LR:
        return UPSTREAM_LR[label]
    n = count_parameters(model).non_embedding
    ladder = {p: count_parameters(ModelConfig.from_preset(p)).non_embedding for p in PRESETS}
    nearest = min(ladder, key=lambda p: abs(math.log(ladder[p] / n)))
    return UPSTREAM_LR[nearest]


def _global_batch_images(
    training: TrainingConfig, compute: float, shortest: int, tokens_per_image: int, world: int
) -> int:
    """Whole images per optimizer step, a multiple of the workers, shrunk for `min_steps`."""
    setting = training.global_batch_tokens
    if isinstance(setting, DeepSeekBatch):
        k, e = DEEPSEEK_BATCH
        tokens = k * compute**e
        if setting.max_tokens is not None:
            tokens = min(tokens, setting.max_tokens)
    else:
        tokens = setting
    tokens = min(tokens, shortest / training.min_steps)
    return max(world, math.floor(tokens / tokens_per_image / world) * world)


def _lr(
    training: TrainingConfig, base: float, batch_tokens: int, compute: float, multiplier: float
) -> float:
    setting = training.lr
    if isinstance(setting, float | int):
        rate = float(setting)
    elif setting == "table":
        rate = base
    elif setting == "deepseek":
        k, e = DEEPSEEK_LR
        rate = k * compute**e
    else:
        assert isinstance(setting, SqrtBatchLr)
        rate = base * math.sqrt(batch_tokens / setting.reference_batch_tokens)
    return rate * multiplier


def _warmup(training: TrainingConfig, steps: int) -> int:
    rule = training.warmup
    warmup = rule.steps if rule.steps is not None else round(rule.fraction * steps)
    if rule.max_steps is not None:
        warmup = min(warmup, rule.max_steps)
    return max(1, warmup)


def resolve(
    training: TrainingConfig,
    model: ModelConfig,
    *,
    cell: str,
    base_lr: float,
    budgets: list[int],
    world_size: int,
    multiplier: float = 1.0,
) -> Choice:
    """The batch, peak learning rate and warmup of a cell (`budgets` = its token budget) or of
    a branching size (`budgets` = all of its budgets); `cell` names it in errors."""
    tokens_per_image = model.image.tokens_per_image
    per_token = flops_per_token(model).attention
    compute = math.exp(sum(math.log(per_token * d) for d in budgets) / len(budgets))
    shortest = min(budgets)
    images = _global_batch_images(training, compute, shortest, tokens_per_image, world_size)
    batch_tokens = images * tokens_per_image
    steps = shortest // batch_tokens
    warmup = _warmup(training, steps)
    if not training.allow_short:
        _require_sound(training, cell, steps, warmup, batch_tokens)
    lr = _lr(training, base_lr, batch_tokens, compute, multiplier)
    return Choice(global_batch_tokens=batch_tokens, lr=lr, warmup_steps=warmup)


def _require_sound(
    training: TrainingConfig, cell: str, steps: int, warmup: int, batch_tokens: int
) -> None:
    if steps < 2:
        raise RuleError(
            f"{cell}: tokens: the budget gives {steps} optimizer step(s) of {batch_tokens} "
            "tokens, too few to warm up and train; raise tokens or lower global_batch_tokens"
        )
    if steps < training.min_steps:
        raise RuleError(
            f"{cell}: training.min_steps {training.min_steps}: even one image per worker per "
            f"step ({batch_tokens} tokens) gives only {steps} optimizer steps; raise the budget, "
            "lower min_steps, or set training.allow_short: true"
        )
    if warmup >= steps:
        raise RuleError(
            f"{cell}: training.warmup gives {warmup} warmup steps of {steps}: no step would "
            "run at the peak rate; lower warmup, raise the budget or set allow_short: true"
        )
