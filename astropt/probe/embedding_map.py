"""2-D maps of embeddings, hexbin-coloured by a galaxy property (PNG, matplotlib Agg).

The default projection is UMAP (McInnes et al. 2018, umap-learn), as in the astroPT paper's
embedding figure (Smith et al. 2024, arXiv:2405.14930); PCA and t-SNE on request. Every
projection is seeded, so the same embeddings give the same map. UMAP runs single-threaded when
seeded; its neighbour graph comes from scikit-learn's exact search, which is deterministic and
spares numba compiling umap-learn's approximate search in every new process.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from astropt.probe.errors import ProbeInputError

PROJECTIONS = ("umap", "pca", "tsne")
UMAP_NEIGHBOURS = 15  # umap-learn's default
MIN_POINTS = 5  # fewer galaxies make no map


def _umap(x: np.ndarray, seed: int) -> np.ndarray:
    from umap import UMAP  # imported here: umap-learn brings numba, seconds to import

    neighbours = min(UMAP_NEIGHBOURS, len(x) - 1)
    distances, indices = NearestNeighbors(n_neighbors=neighbours).fit(x).kneighbors(x)
    reducer = UMAP(
        n_neighbors=neighbours,
        random_state=seed,
        n_jobs=1,
        precomputed_knn=(indices, distances, None),
    )
    # umap-learn warns that a seed means one thread and that a precomputed graph cannot place
    # new points: both are intended here
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]", category=UserWarning)
        return reducer.fit_transform(x)


def project(embeddings: np.ndarray, method: str, seed: int) -> np.ndarray:
    """(n, 2) projection of standardised embeddings by UMAP, PCA or t-SNE."""
    if len(embeddings) < MIN_POINTS:
        count = len(embeddings)
        raise ProbeInputError(f"{count} galaxies are too few for a map (at least {MIN_POINTS})")
    x = StandardScaler().fit_transform(embeddings)
    if method == "umap":
        return _umap(x, seed)
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
    method: str = "umap",
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
