"""The DeepSpeed engine of one worker: ZeRO config, AdamW param groups, the LR schedule."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from functools import partial

import deepspeed
import torch
from torch import nn

from astropt.config import TrainConfig
from astropt.schedule import constant_multiplier, cosine_multiplier, wsd_multiplier
from astropt.train.ops import prepare_deepspeed_ops
from astropt.train.plan import TrainPlan


def deepspeed_config(cfg: TrainConfig, plan: TrainPlan, bf16: bool) -> dict:
    """ZeRO stage as configured; bf16 on GPU, fp32 on CPU (DeepSpeed refuses fp16 on CPU)."""
    return {
        "train_batch_size": plan.global_batch_images,
        "train_micro_batch_size_per_gpu": plan.micro_batch_images,
        "gradient_accumulation_steps": plan.grad_accum,
        "gradient_clipping": cfg.training.optim.grad_clip,
        "zero_optimization": {"stage": plan.zero_stage},
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**12,
        "wall_clock_breakdown": False,
    }


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; biases, LayerNorm gains and nothing else are exempt."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def lr_schedule(cfg: TrainConfig, plan: TrainPlan) -> Callable[[int], float]:
    """The configured schedule as a function of the optimizer step (a multiplier of lr)."""
    optim = cfg.training.optim
    if optim.schedule == "constant":
        return partial(constant_multiplier, warmup_steps=plan.warmup_steps)
    common = {
        "total_steps": plan.steps,
        "warmup_steps": plan.warmup_steps,
        "min_ratio": optim.min_lr_ratio,
    }
    if optim.schedule == "wsd":
        return partial(
            wsd_multiplier,
            cooldown_fraction=optim.cooldown_fraction,
            shape=optim.cooldown_shape,
            **common,
        )
    return partial(cosine_multiplier, **common)


def build_engine(
    model: nn.Module, cfg: TrainConfig, plan: TrainPlan, bf16: bool
) -> deepspeed.DeepSpeedEngine:
    """AdamW (torch's, passed in: DeepSpeed's own optimizers compile C++ ops on CPU); no op
    build at all (`prepare_deepspeed_ops`)."""
    prepare_deepspeed_ops()
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.training.optim.weight_decay),
        lr=plan.lr,
        betas=(cfg.training.optim.beta1, cfg.training.optim.beta2),
        fused=torch.cuda.is_available(),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lr_schedule(cfg, plan))
    engine, *_ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(cfg, plan, bf16),
    )
    if plan.world_size == 1 and plan.zero_stage == 0:
        # One rank has nothing to reduce; DeepSpeed would still flatten, "all-reduce" and copy
        # back every gradient each step (2-3% of a 1M-preset step on CPU).
        engine.enable_backward_allreduce = False
    return engine


_WORLD_ENV_ADDED: list[str] = []


def init_world_of_one(backend: str) -> None:
    """This process as rank 0 of a world of one, for a DeepSpeed engine outside Ray Train (a
    benchmark, a test, a notebook). Ray Train sets up its workers' process group itself.

    DeepSpeed reads RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous address from the
    environment; values already set (a torchrun launch) win, and a free local port is taken for
    the rendezvous. What this adds is removed again by `release_world_of_one`, so a process it
    starts later (a sweep's Ray cluster, a subprocess) does not inherit a port still in use.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    world = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": str(port)}  # fmt: skip
    for key, value in world.items():
        if key not in os.environ:
            os.environ[key] = value
            _WORLD_ENV_ADDED.append(key)
    prepare_deepspeed_ops()
    deepspeed.init_distributed(dist_backend=backend, verbose=False)


def release_world_of_one() -> None:
    """End the world of one `init_world_of_one` began, through DeepSpeed, which then drops the
    process groups it cached, and remove the variables it set: the next run in this process (a
    reused Tune trial) starts clean."""
    if torch.distributed.is_initialized():
        deepspeed.comm.destroy_process_group()
    while _WORLD_ENV_ADDED:
        os.environ.pop(_WORLD_ENV_ADDED.pop(), None)


def align_schedule(engine: deepspeed.DeepSpeedEngine, step: int) -> None:
    """Set the learning rate to this run's schedule at `step` after loading a checkpoint: the
    optimizer state holds the rate of the run that saved it, which for a branch started from its
    trunk is the trunk's constant rate, not the branch's cooldown."""
    scheduler = engine.lr_scheduler
    scheduler.last_epoch = step - 1
    scheduler.step()
