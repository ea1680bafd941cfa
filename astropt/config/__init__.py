"""Typed configuration: one tree for a model, its images, its data, its training and resources.

Everything a user can set is validated here, once, at the edge: unknown keys and bad values are
errors that name the field and what was expected. Each default lives here and nowhere else: the
grid file's `image`, `data` and `training` sections are these models, a cell's configuration is
a `TrainConfig` built from them in one validation call, and the train command's flags (and their
help) are derived from them.

    fields.py    shared value types (numbers written as 1e6, locations) and the strict base model
    model.py     the size ladder, a model's shape and its images
    training.py  batch, learning rate and warmup (values or rules), optimizer, evaluation, ...
    run.py       data, a whole run, its resources, its MLflow tracking
"""

from astropt.config.fields import Count, Location, Number, StrictModel
from astropt.config.model import PRESETS, ImageConfig, ModelConfig
from astropt.config.run import (
    DataConfig,
    ResourcesConfig,
    SyntheticData,
    TrackingConfig,
    TrainConfig,
)
from astropt.config.training import (
    AUTO_ZERO2_PARAMS,
    DeepSeekBatch,
    DivergenceConfig,
    LrSetting,
    OptimConfig,
    SqrtBatchLr,
    StallForTest,
    TrainingConfig,
    Warmup,
    WatchdogConfig,
    ZeroStage,
)

__all__ = [
    "AUTO_ZERO2_PARAMS",
    "PRESETS",
    "Count",
    "DataConfig",
    "DeepSeekBatch",
    "DivergenceConfig",
    "ImageConfig",
    "Location",
    "LrSetting",
    "ModelConfig",
    "Number",
    "OptimConfig",
    "ResourcesConfig",
    "SqrtBatchLr",
    "StallForTest",
    "StrictModel",
    "SyntheticData",
    "TrackingConfig",
    "TrainConfig",
    "TrainingConfig",
    "Warmup",
    "WatchdogConfig",
    "ZeroStage",
]
