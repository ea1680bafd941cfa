"""Learning-rate schedules and the exact batch arithmetic of a run."""

import math
from itertools import pairwise

import pytest

from astropt.config import DataConfig, ModelConfig, TrainConfig, TrainingConfig
from astropt.schedule import constant_multiplier, cosine_multiplier, wsd_multiplier
from astropt.train.plan import DataFacts, PlanError, make_plan


def test_cosine_warms_up_then_ends_at_min_ratio_on_the_last_step():
    values = [cosine_multiplier(s, 100, 10, 0.1) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0)
    assert values[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in pairwise(values[9:]))


@pytest.mark.parametrize("shape", ["linear", "1-sqrt"])
def test_wsd_is_the_constant_trunk_until_its_cooldown(shape):
    total, warmup = 200, 10
    values = [wsd_multiplier(s, total, warmup, 0.0, 0.2, shape) for s in range(total)]
    start = total - 40
    assert values[:start] == [constant_multiplier(s, warmup) for s in range(start)]
    assert values[-1] == pytest.approx(0.0)
    cooled = values[start:]
    assert all(a > b for a, b in pairwise(cooled))
    middle = values[start + 19]
    assert middle == pytest.approx(0.5 if shape == "linear" else 1 - math.sqrt(0.5))


NO_DATA = DataFacts(train_images=None, val_images=None)


def _cfg(tokens: int = 100_000, model: ModelConfig | None = None, data: DataConfig | None = None,
         **training: object) -> TrainConfig:  # fmt: skip
    return TrainConfig(
        model=model or ModelConfig(n_layer=1, n_head=1, n_embd=16, image_size=64),
        data=data or DataConfig(train="/x/train", val="/x/val"),
        tokens=tokens,
        training=TrainingConfig(**({"lr": 1e-3} | training)),
    )


def test_plan_derives_whole_batches_and_steps_from_the_token_budget():
    cfg = _cfg(global_batch_tokens=1000, micro_batch_images=16)
    plan = make_plan(cfg, world_size=2, data=NO_DATA)
    assert plan.tokens_per_image == 15
    # 1000 tokens = 66.7 images: 33 per worker, as 3 micro-batches of 11 (at most 16).
    assert (plan.global_batch_images, plan.micro_batch_images, plan.grad_accum) == (66, 11, 3)
    assert plan.steps == 100_000 // (66 * 15)
    assert plan.tokens_seen == plan.steps * 66 * 15 <= 100_000


def test_the_split_never_grows_the_batch_and_stays_within_one_percent():
    for images in (205, 320, 97, 1024, 10):
        plan = make_plan(_cfg(global_batch_tokens=images * 15), world_size=1, data=NO_DATA)
        assert 0.99 * images <= plan.global_batch_images <= images
        assert plan.micro_batch_images <= 32


def test_plan_refuses_a_budget_smaller_than_one_global_batch():
    with pytest.raises(PlanError, match=r"tokens: budget 500 is smaller than one global batch"):
        make_plan(_cfg(tokens=500, global_batch_tokens=960), world_size=2, data=NO_DATA)


def test_plan_needs_resolved_rules():
    with pytest.raises(TypeError, match="resolved values"):
        make_plan(_cfg(lr="table"), world_size=1, data=NO_DATA)


def test_fixed_warmup_steps_override_the_fraction():
    plan = make_plan(_cfg(warmup={"steps": 7}), world_size=1, data=NO_DATA)
    assert plan.warmup_steps == 7


@pytest.mark.parametrize(
    ("stage", "preset", "workers", "expected"),
    [
        ("auto", "1M", 1, 0),  # one worker: nothing to shard
        ("auto", "1M", 2, 0),  # small model: partitioning only costs time
        ("auto", "309M", 1, 0),
        ("auto", "309M", 8, 2),  # from 250M parameters up on several workers
        (1, "1M", 1, 1),  # an explicit stage is kept
    ],
)
def test_zero_stage_auto_shards_only_what_saves_memory(stage, preset, workers, expected):
    cfg = _cfg(model=ModelConfig.from_preset(preset, image_size=64), zero_stage=stage)
    assert make_plan(cfg, world_size=workers, data=NO_DATA).zero_stage == expected


def test_a_layout_that_leaves_ray_data_no_cpu_is_refused_not_hung():
    from astropt.config import ResourcesConfig
    from astropt.train.trainer import require_data_cpus

    require_data_cpus(ResourcesConfig(workers=2, cpus_per_worker=0.5), cluster_cpus=2)
    with pytest.raises(PlanError, match=r"resources.cpus_per_worker: 1 run\(s\) x 1 workers"):
        require_data_cpus(ResourcesConfig(workers=1, cpus_per_worker=1.5), cluster_cpus=2)
    with pytest.raises(PlanError, match="lower cpus_per_worker, workers or max_concurrent"):
        require_data_cpus(ResourcesConfig(workers=2, cpus_per_worker=0.5), 2, runs_at_once=2)


@pytest.mark.parametrize(
    ("memory_mb", "workers", "kept"),
    [(2048, 2, True), (0, 2, False), (60, 1, False), (60, 2, True)],
)
def test_workers_keep_the_training_set_in_memory_only_within_the_budget(
    galaxies, memory_mb, workers, kept
):
    """The 5,794 training images of 3 x 64 x 64 bytes are 67.9 MB: 34 MB per worker of two."""
    from astropt.config import ResourcesConfig
    from astropt.train.run import run_params
    from astropt.train.trainer import RunData

    train, val = galaxies
    cfg = _cfg(data=DataConfig(train=train, val=val, memory_mb=memory_mb))
    plan = make_plan(cfg, workers, RunData.read(train, val).facts)
    assert plan.data_in_memory == kept
    assert run_params(cfg, plan, ResourcesConfig(workers=workers))["data_in_memory"] == kept
