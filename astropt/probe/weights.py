"""Where a probed model comes from: a weights folder as the trainer exports it, a cell run in
MLflow (its `model/` artifacts), the best finished cell of a sweep's experiment, or an upstream
astroPT checkpoint (`astropt.upstream`).

The export format is a folder holding `model.safetensors` (the state dict, float32) and
`config.json` (the ModelConfig); `save_weights` writes it, so a run's model can be probed or
shared as a folder.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from astropt.config import ModelConfig
from astropt.model import AstroPT
from astropt.probe.embed import ASTROPT_LAYOUT, UPSTREAM_LAYOUT
from astropt.probe.errors import ProbeInputError
from astropt.record import (
    CONFIG_FILE,
    MODEL_ARTIFACT,
    WEIGHTS_FILE,
    Metric,
    Param,
    Role,
    Status,
    Tag,
    experiment_names,
    find_experiment,
    search_runs,
    sqlite_path,
)
from astropt.upstream import UpstreamCheckpointError, is_upstream_checkpoint, load_upstream


@dataclass(frozen=True)
class ModelSource:
    """A loaded model and what the probe needs to know about where it came from."""

    model: AstroPT
    description: str  # shown in the probe table's header: "run ...", a path
    layout: str = ASTROPT_LAYOUT  # the image layout the weights were trained on
    data_uri: str | None = None  # a run's validation set
    init_seed: int = 0  # the seed its untrained twin is built with


def load_weights(source: str | os.PathLike[str]) -> AstroPT:
    """The model in a weights folder, or in a `.safetensors` file with config.json beside it."""
    source = Path(source)
    weights = source / WEIGHTS_FILE if source.is_dir() else source
    config = weights.parent / CONFIG_FILE
    missing = [str(p) for p in (weights, config) if not p.is_file()]
    if missing:
        raise ProbeInputError(
            f"missing model weights: {', '.join(missing)} not found (expected {WEIGHTS_FILE} "
            f"and {CONFIG_FILE} as the trainer exports them, or an upstream *ckpt.pt)"
        )
    try:
        cfg = ModelConfig.model_validate_json(config.read_text())
    except ValidationError as err:
        raise ProbeInputError(f"{config} is not a model config: {err}") from err
    model = AstroPT(cfg)
    try:
        model.load_state_dict(load_file(weights))
    except RuntimeError as err:
        raise ProbeInputError(f"{weights} does not fit the model in {config}: {err}") from err
    return model.eval()


def _require_no_weights(folder: Path) -> None:
    held = [str(folder / n) for n in (WEIGHTS_FILE, CONFIG_FILE) if (folder / n).exists()]
    if held:
        raise ProbeInputError(f"{', '.join(held)} already exist; export to another folder")


def save_weights(model: AstroPT, folder: str | os.PathLike[str]) -> Path:
    """Write a model in the export format; refuses to replace weights already there."""
    folder = Path(folder)
    _require_no_weights(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / WEIGHTS_FILE)
    (folder / CONFIG_FILE).write_text(model.cfg.model_dump_json(indent=2))
    return folder


def weights_source(path: str | os.PathLike[str], image_size: int | None = None) -> ModelSource:
    """Exported weights, or an upstream checkpoint read for `image_size` images."""
    if (Path(path) / WEIGHTS_FILE).is_file() or not is_upstream_checkpoint(path):
        return ModelSource(load_weights(path), str(path))
    try:
        model = load_upstream(path, image_size)
    except UpstreamCheckpointError as err:
        raise ProbeInputError(f"upstream checkpoint {path}: {err}") from err
    return ModelSource(model, f"upstream {path}", layout=UPSTREAM_LAYOUT)


def tracking_client(tracking_uri: str) -> MlflowClient:
    """A client for an existing store (MLflow would silently create a missing SQLite file)."""
    db = sqlite_path(tracking_uri)
    if db is not None and not db.is_file():
        raise ProbeInputError(f"no MLflow database at {db} (tracking URI {tracking_uri})")
    return MlflowClient(tracking_uri=tracking_uri)


def run_source(client: MlflowClient, run_id: str) -> ModelSource:
    """The model a cell run exported (its `model/` artifacts), its validation set and seed."""
    try:
        params = client.get_run(run_id).data.params
    except MlflowException as err:
        raise ProbeInputError(f"no MLflow run {run_id!r} at {client.tracking_uri}") from err
    names = {a.path for a in client.list_artifacts(run_id, MODEL_ARTIFACT)}
    expected = {f"{MODEL_ARTIFACT}/{WEIGHTS_FILE}", f"{MODEL_ARTIFACT}/{CONFIG_FILE}"}
    if not expected <= names:
        raise ProbeInputError(
            f"missing model weights: run {run_id} has no artifacts {', '.join(sorted(expected))} "
            "(only finished cells export weights)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        model = load_weights(Path(client.download_artifacts(run_id, MODEL_ARTIFACT, tmp)))
    return ModelSource(
        model,
        f"run {run_id}",
        data_uri=params.get(Param.DATA_VAL),
        init_seed=int(params.get(Param.SEED, 0)),
    )


def export_run(client: MlflowClient, run_id: str, folder: str | os.PathLike[str]) -> Path:
    """Write a cell run's model to `folder` in the export format (checked free first)."""
    _require_no_weights(Path(folder))
    return save_weights(run_source(client, run_id).model, folder)


def best_cell(client: MlflowClient, experiment: str) -> str:
    """The id of the finished cell run of `experiment` with the lowest final val loss."""
    experiment_id = find_experiment(client, experiment)
    if experiment_id is None:
        names = ", ".join(map(repr, experiment_names(client))) or "none"
        raise ProbeInputError(f"unknown MLflow experiment {experiment!r}; available: {names}")
    finished = search_runs(client, experiment_id, Role.CELL, extra={Tag.STATUS: Status.FINISHED})
    losses = {
        run.info.run_id: run.data.metrics.get(Metric.FINAL_VAL_LOSS, math.inf) for run in finished
    }
    if not losses:
        raise ProbeInputError(f"experiment {experiment!r} has no finished cell run to probe")
    return min(losses, key=losses.__getitem__)
