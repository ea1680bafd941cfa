"""The DeepSpeed engine of one worker takes the optimizer steps a plain PyTorch loop would."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from astropt.config import DataConfig, ModelConfig, OptimConfig, TrainConfig, TrainingConfig
from astropt.model import AstroPT
from astropt.patches import images_to_tokens
from astropt.train.engine import (
    build_engine,
    init_world_of_one,
    param_groups,
    release_world_of_one,
)
from astropt.train.loop import fp32_loss
from astropt.train.plan import DataFacts, make_plan

NO_DATA = DataFacts(train_images=None, val_images=None)


@pytest.fixture(scope="module")
def one_rank():
    """This process as rank 0 of a gloo world of one, as a single Ray Train worker is; the
    world (DeepSpeed's cached groups too) and the environment are as they were afterwards."""
    saved = os.environ.copy()
    init_world_of_one("gloo")
    yield
    release_world_of_one()
    assert not dist.is_initialized()
    world = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    assert {key for key in world if os.environ.get(key) != saved.get(key)} == set()


def _config(**training: object) -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(n_layer=1, n_head=2, n_embd=32, image_size=32),
        data=DataConfig(train="unused/train", val="unused/val"),
        tokens=4 * 16 * 3,  # 4 steps of 16 images of 3 tokens (2 x 2 patches)
        training=TrainingConfig(
            global_batch_tokens=16 * 3,
            micro_batch_images=8,  # two accumulated micro-batches per step
            lr=3e-3,
            warmup={"steps": 1},  # the full rate from the first step
            optim=OptimConfig(schedule="constant"),
            **training,
        ),
    )


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_engine_steps_match_a_plain_adamw_loop(one_rank, zero_stage):
    cfg = _config(zero_stage=zero_stage)
    plan = make_plan(cfg, world_size=1, data=NO_DATA)
    assert (plan.grad_accum, plan.steps) == (2, 4)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=generator)
    batches = images_to_tokens(images, 16).split(plan.micro_batch_images)

    torch.manual_seed(0)
    engine = build_engine(AstroPT(cfg.model), cfg, plan, bf16=False)
    for tokens in batches:
        loss = fp32_loss(engine, tokens)
        engine.backward(loss)
        engine.step()
    trained = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
    engine.destroy()

    torch.manual_seed(0)
    model = AstroPT(cfg.model)
    optim = cfg.training.optim
    adamw = torch.optim.AdamW(param_groups(model, optim.weight_decay), lr=plan.lr,
                              betas=(optim.beta1, optim.beta2))  # fmt: skip
    for step in range(plan.steps):
        for tokens in batches[step * 2 : step * 2 + 2]:
            loss = AstroPT.loss(model(tokens), tokens[:, 1:])
            (loss / 2).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        adamw.step()
        adamw.zero_grad()
    expected = model.state_dict()
    assert trained.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(trained[key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert any(not torch.equal(trained[k], AstroPT(cfg.model).state_dict()[k]) for k in trained)


def test_the_loss_of_a_bf16_model_is_computed_in_fp32(one_rank):
    """A bf16 engine's predictions are compared with the fp32 targets in fp32: the loss equals
    an fp32 computation from the same predictions, where a bf16 loss would be off by ~0.4%."""
    cfg = _config(zero_stage=0)
    plan = make_plan(cfg, world_size=1, data=NO_DATA)
    torch.manual_seed(0)
    engine = build_engine(AstroPT(cfg.model), cfg, plan, bf16=True)
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=generator)
    tokens = images_to_tokens(images, 16)
    with torch.no_grad():
        loss = fp32_loss(engine, tokens)
        predictions = engine(tokens.to(torch.bfloat16))
    engine.destroy()
    assert predictions.dtype == torch.bfloat16 and loss.dtype == torch.float32
    expected = torch.nn.functional.huber_loss(predictions.float(), tokens[:, 1:], delta=1.0)
    assert loss.item() == expected.item()
    in_bf16 = torch.nn.functional.huber_loss(predictions, tokens[:, 1:].bfloat16(), delta=1.0)
    assert in_bf16.dtype == torch.bfloat16 and in_bf16.item() != loss.item()
