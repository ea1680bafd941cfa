"""2-D maps of embeddings, hexbin-coloured by a galaxy property (PNG, matplotlib Agg)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.preprocessing import StandardScaler

from astropt.probe.errors import ProbeInputError

PROJECTIONS = ("pca", "tsne")


def project(embeddings: np.ndarray, method: str, seed: int) -> np.ndarray:
    """(n, 2) projection of standardised embeddings by PCA or t-SNE."""
    x = StandardScaler().fit_transform(embeddings)
    if method == "pca":
        return PCA(2, random_state=seed).fit_transform(x)
    if method == "tsne":
        perplexity = min(30.0, (len(x) - 1) / 3)
        return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    raise ProbeInputError(
        f"unknown projection {method!r}; expected one of {', '.join(PROJECTIONS)}"
    )


def embedding_map(
    features: Mapping[str, np.ndarray],
    colour: np.ndarray,
    colour_name: str,
    path: Path,
    method: str = "pca",
    seed: int = 0,
) -> None:
    """One panel per feature set: its 2-D projection, each hexagon coloured by the median
    `colour` of the galaxies in it."""
    finite = np.isfinite(colour)
    if not finite.any():
        raise ProbeInputError(f"map colour {colour_name!r} has no finite values")
    low, high = np.percentile(colour[finite], [2, 98])
    fig, axes = plt.subplots(
        1, len(features), figsize=(4 * len(features) + 1, 4.2), squeeze=False, layout="constrained"
    )
    for ax, (name, values) in zip(axes[0], features.items(), strict=True):
        xy = project(values[finite], method, seed)
        cells = ax.hexbin(
            xy[:, 0],
            xy[:, 1],
            C=colour[finite],
            reduce_C_function=np.median,
            gridsize=35,
            mincnt=1,
            vmin=low,
            vmax=high,
            cmap="viridis",
        )
        ax.set(title=f"{name} ({method.upper()})", xticks=[], yticks=[])
    fig.colorbar(cells, ax=axes[0].tolist(), label=f"median {colour_name} per cell")
    fig.suptitle(f"{int(finite.sum())} galaxies, coloured by {colour_name}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
