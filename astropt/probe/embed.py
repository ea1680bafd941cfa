"""Embeddings of a shard set's images from a trained (or freshly initialised) astroPT."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from astropt.config import ModelConfig
from astropt.model import AstroPT
from astropt.patches import images_to_tokens
from astropt.probe.errors import ProbeInputError
from astropt.upstream import to_upstream_layout

POOLS = ("mean", "last")
#: The image layouts a model may have been trained on: our shards' (bands (g, r, z), (C, H, W)),
#: or upstream astroPT's (see `astropt.upstream.to_upstream_layout`).
ASTROPT_LAYOUT, UPSTREAM_LAYOUT = "astropt", "upstream"
LAYOUTS = (ASTROPT_LAYOUT, UPSTREAM_LAYOUT)


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
    layout: str = ASTROPT_LAYOUT  # the image layout the model was trained on

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ProbeInputError(f"unknown pool {self.pool!r}; expected one of {', '.join(POOLS)}")
        if self.layout not in LAYOUTS:
            raise ProbeInputError(
                f"unknown image layout {self.layout!r}; expected one of {', '.join(LAYOUTS)}"
            )
        if self.tokens < 1 or self.batch_size < 1:
            raise ProbeInputError(
                f"tokens ({self.tokens}) and batch_size ({self.batch_size}) must be at least 1"
            )


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
    """(n, n_embd) float32 embeddings of uint8 (n, C, H, W) images in our layout, batch by batch,
    each batch converted to the layout the model was trained on (the model is moved to
    `settings.device`)."""
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
        batch = images[start : start + settings.batch_size]
        if settings.layout == UPSTREAM_LAYOUT:
            batch = to_upstream_layout(batch)
        batch = torch.from_numpy(np.ascontiguousarray(batch))
        # attention is causal: the pooled positions never see later ones, so only they are run
        tokens = images_to_tokens(batch.to(settings.device), patch)[:, : settings.tokens]
        chunks.append(
            model.get_embeddings(tokens, settings.layer, slice(0, settings.tokens), settings.pool)
            .cpu()
            .numpy()
        )
    return np.concatenate(chunks)
