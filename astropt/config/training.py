"""How a model is trained: batch and learning-rate settings (fixed values or rules), warmup,
the optimizer and schedule, evaluation, checkpoints, divergence and the progress watchdog."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from astropt.config.fields import Count, StrictModel


class OptimConfig(StrictModel):
    """AdamW and the shape of its learning-rate schedule (the peak rate and warmup are
    `TrainingConfig.lr` and `.warmup`).

    cosine: warmup, then cosine decay to lr * min_lr_ratio at the last step. wsd: warmup,
    constant, then a cooldown over the last `cooldown_fraction` of the steps (linear or 1-sqrt)
    to lr * min_lr_ratio. constant: warmup, then constant (a WSD trunk).
    """

    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    """the schedule ends at lr x this"""
    weight_decay: float = Field(0.1, ge=0)
    """AdamW's, on matrices only"""
    beta1: float = Field(0.9, ge=0, lt=1)
    """AdamW's first-moment decay"""
    beta2: float = Field(0.95, ge=0, lt=1)
    """AdamW's second-moment decay"""
    grad_clip: float = Field(1.0, ge=0)
    """gradient norm clip (0: none)"""
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    """cosine, wsd (warmup-stable-decay) or constant"""
    cooldown_fraction: float = Field(0.2, gt=0, le=1)
    """wsd: share of the steps in the final cooldown"""
    cooldown_shape: Literal["linear", "1-sqrt"] = "linear"
    """wsd: linear or 1-sqrt cooldown"""


class DeepSeekBatch(StrictModel):
    """Global batch from compute: B_opt = 0.2920 C^0.3271 tokens (DeepSeek LLM 2024, Eq. 1, C
    in FLOPs with attention), at most `max_tokens`."""

    rule: Literal["deepseek"]
    max_tokens: PositiveInt | None = None
    """cap on the rule's batch"""


class SqrtBatchLr(StrictModel):
    """The size's table rate at `reference_batch_tokens`, scaled by sqrt(batch / reference):
    the square-root rule for Adam (Malladi et al. 2022; Granziol et al. 2022)."""

    rule: Literal["sqrt_batch"]
    reference_batch_tokens: PositiveInt
    """the batch at which the size's table rate holds"""


class Warmup(StrictModel):
    """Linear warmup over a `fraction` of a cell's steps (in branching, of its size's shortest
    budget) or a fixed number of `steps`; clipped to at most `max_steps`, never below 1."""

    fraction: float | None = Field(None, gt=0, lt=1)
    """warmup as a share of the steps"""
    steps: PositiveInt | None = None
    """warmup as a number of steps"""
    max_steps: PositiveInt | None = None
    """at most this many warmup steps"""

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
    """diverged when the loss exceeds this x its best"""
    min_steps: int = Field(10, ge=0)
    """steps before spikes count"""


class WatchdogConfig(StrictModel):
    """A run that makes no progress for this long fails with where it was stuck: its first
    step may take `first_step_s`; later steps `step_factor` x the slowest step seen, and at
    least `min_s`."""

    first_step_s: PositiveFloat = 900.0
    """seconds the first step may take (start-up included)"""
    step_factor: PositiveFloat = 20.0
    """later steps may take this x the slowest step seen"""
    min_s: PositiveFloat = 120.0
    """but always at least this many seconds"""


class StallForTest(StrictModel):
    """Rank 0 of every run of `size` sleeps `seconds` after optimizer step `after_step`."""

    size: str
    """the size whose runs hang"""
    seconds: PositiveFloat
    """how long rank 0 sleeps"""
    after_step: PositiveInt = 1
    """the optimizer step after which it sleeps (again on every resume that passes it)"""


class TrainingConfig(StrictModel):
    """How a model is trained: batch, learning rate, warmup and schedule, evaluation,
    checkpoints. Batch and learning rate take fixed values or rules (resolved per cell by
    `astropt.hparams`); a cell's own configuration holds the resolved values."""

    global_batch_tokens: Count | DeepSeekBatch = 960
    """tokens per optimizer step, or {rule: deepseek}"""
    min_steps: PositiveInt = Field(1, description="shrink the global batch of shorter cells")
    allow_short: bool = Field(False, description="accept cells below min_steps, or unwarmed")
    micro_batch_images: PositiveInt = 32
    """images per worker per forward pass (gradient accumulation fills the rest)"""
    lr: LrSetting = "table"
    """peak learning rate: a number, table (the size's own), deepseek, or {rule: sqrt_batch, ...}"""
    warmup: Warmup = Warmup(fraction=0.05)
    """{fraction: F} or {steps: S}, optionally max_steps"""
    optim: OptimConfig = OptimConfig()
    zero_stage: ZeroStage = "auto"
    """DeepSpeed ZeRO stage, or auto (0 on one worker or below 250M parameters, else 2)"""
    eval_every: PositiveInt = 50
    """steps between validation evaluations"""
    eval_batches: PositiveInt = 4
    """batches of each periodic evaluation"""
    final_eval_batches: PositiveInt | None = Field(
        None, description="batches of the last evaluation (final/val_loss); default eval_batches"
    )
    eval_batch_images: PositiveInt = 64
    """images per evaluation batch"""
    checkpoint_every: PositiveInt = 50
    """steps between checkpoints"""
    keep_checkpoints: PositiveInt = Field(2, description="latest checkpoints kept per run")
    log_every: PositiveInt = 10
    """steps between training-loss records"""
    divergence: DivergenceConfig = DivergenceConfig()
    watchdog: WatchdogConfig = WatchdogConfig()
    stall_for_test: StallForTest | None = Field(
        None,
        description="testing the watchdog and resumption: make runs of one size hang after a step",
    )
