"""Feature sets to compare a trained model's embeddings against.

* ``untrained``: the same architecture freshly initialised with the run's seed (the trained
  model's own starting point), embedded the same way: what training added.
* ``pixels-pca``: the raw pixels (scaled to [0, 1]) reduced by PCA to the embedding width: what a
  linear probe gets from the images without any model. The PCA is fitted once on all probe
  images, without labels, like the pretrained model it stands in for. Images wider than
  ``MAX_PIXEL_SIDE`` are block-averaged down first so memory stays bounded.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

from astropt.model import AstroPT
from astropt.probe.embed import EmbedSettings, embed, untrained_like

TRAINED, UNTRAINED, PIXELS = "astropt", "untrained", "pixels-pca"
FEATURE_SETS = (TRAINED, UNTRAINED, PIXELS)
MAX_PIXEL_SIDE = 64


def _block_mean(images: np.ndarray, side: int) -> np.ndarray:
    """Images averaged over f x f pixel blocks, f the smallest factor leaving sides <= `side`."""
    n, c, h, w = images.shape
    factor = next(f for f in range(1, h + 1) if h % f == 0 and w % f == 0 and h // f <= side)
    if factor == 1:
        return images.astype(np.float32)
    blocks = images.reshape(n, c, h // factor, factor, w // factor, factor)
    return blocks.mean(axis=(3, 5), dtype=np.float32)


def pixel_pca_features(images: np.ndarray, width: int, seed: int) -> np.ndarray:
    """(n, min(width, n, pixels)) principal components of the flattened images."""
    pixels = _block_mean(images, MAX_PIXEL_SIDE).reshape(len(images), -1) / 255.0
    components = min(width, *pixels.shape)
    return PCA(components, svd_solver="randomized", random_state=seed).fit_transform(pixels)


def feature_sets(
    model: AstroPT,
    images: np.ndarray,
    settings: EmbedSettings,
    seed: int,
    baselines: bool = True,
) -> dict[str, np.ndarray]:
    """The trained model's embeddings and, with `baselines`, the two reference feature sets."""
    features = {TRAINED: embed(model, images, settings)}
    if baselines:
        features[UNTRAINED] = embed(untrained_like(model.cfg, seed), images, settings)
        features[PIXELS] = pixel_pca_features(images, model.cfg.n_embd, seed)
    return features
