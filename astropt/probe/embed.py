"""Embeddings of a shard set's images from a trained (or freshly initialised) astroPT.

Weights come in the trainer's export format (``astropt.train.loop._export_weights``): a folder
holding ``model.safetensors`` (the state dict, float32) and ``config.json`` (the ModelConfig),
logged to a cell's MLflow run as the artifacts ``model/``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import ValidationError
from safetensors.torch import load_file

from astropt.config import ModelConfig
from astropt.model import AstroPT
from astropt.patches import images_to_tokens
from astropt.probe.errors import ProbeInputError

WEIGHTS_FILE, CONFIG_FILE, ARTIFACT_DIR = "model.safetensors", "config.json", "model"
POOLS = ("mean", "last")


@dataclass(frozen=True)
class EmbedSettings:
    """Which activations make an image's embedding.

    The default is the paper's probe input (Smith et al. 2024, arXiv:2405.14930): the mean of
    the first 64 spiral tokens of the last block's output, before the final LayerNorm. A model
    reading fewer positions than `tokens` pools over all of them.
    """

    layer: int = -1
    tokens: int = 64
    pool: str = "mean"
    batch_size: int = 256
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ProbeInputError(f"unknown pool {self.pool!r}; expected one of {', '.join(POOLS)}")
        if self.tokens < 1 or self.batch_size < 1:
            raise ProbeInputError(
                f"tokens ({self.tokens}) and batch_size ({self.batch_size}) must be at least 1"
            )


def load_weights(source: str | os.PathLike[str]) -> AstroPT:
    """The model in a weights folder, or in a ``.safetensors`` file with config.json beside it."""
    source = Path(source)
    weights = source / WEIGHTS_FILE if source.is_dir() else source
    config = weights.parent / CONFIG_FILE
    missing = [str(p) for p in (weights, config) if not p.is_file()]
    if missing:
        raise ProbeInputError(
            f"missing model weights: {', '.join(missing)} not found "
            f"(expected {WEIGHTS_FILE} and {CONFIG_FILE} as the trainer exports them)"
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


def load_run_weights(client: MlflowClient, run_id: str) -> AstroPT:
    """The model a cell run exported (its ``model/`` artifacts)."""
    try:
        client.get_run(run_id)
    except MlflowException as err:
        raise ProbeInputError(f"no MLflow run {run_id!r} at {client.tracking_uri}") from err
    names = {a.path for a in client.list_artifacts(run_id, ARTIFACT_DIR)}
    expected = {f"{ARTIFACT_DIR}/{WEIGHTS_FILE}", f"{ARTIFACT_DIR}/{CONFIG_FILE}"}
    if not expected <= names:
        raise ProbeInputError(
            f"missing model weights: run {run_id} has no artifacts {', '.join(sorted(expected))} "
            "(only finished cells export weights)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, ARTIFACT_DIR, tmp)
        return load_weights(Path(local))


def untrained_like(cfg: ModelConfig, seed: int) -> AstroPT:
    """A freshly initialised model of the same shape: the trainer seeds torch with the run's
    seed right before building its model, so this is exactly the trained model's starting point.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AstroPT(cfg).eval()


def check_images(cfg: ModelConfig, images: np.ndarray, where: str) -> None:
    """Refuse images the model cannot read."""
    expected = cfg.image.shape
    if tuple(images.shape[1:]) != expected:
        raise ProbeInputError(
            f"images in {where} have shape {tuple(images.shape[1:])}, "
            f"the model reads {expected} (C, H, W)"
        )


def embed(model: AstroPT, images: np.ndarray, settings: EmbedSettings) -> np.ndarray:
    """(n, n_embd) float32 embeddings of uint8 (n, C, H, W) images, batch by batch (the model
    is moved to `settings.device`)."""
    n_layer = model.cfg.n_layer
    if not -n_layer - 1 <= settings.layer <= n_layer:
        raise ProbeInputError(
            f"layer {settings.layer} out of range for a {n_layer}-block model "
            f"(0 = patch encoder, 1..{n_layer} = blocks, negative counts from the end)"
        )
    model.eval().to(settings.device)
    patch = model.cfg.image.patch_size
    chunks = []
    for start in range(0, len(images), settings.batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + settings.batch_size]))
        tokens = images_to_tokens(batch.to(settings.device), patch)
        chunks.append(
            model.get_embeddings(tokens, settings.layer, slice(0, settings.tokens), settings.pool)
            .cpu()
            .numpy()
        )
    return np.concatenate(chunks)
