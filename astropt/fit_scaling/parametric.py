"""The parametric scaling law L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022,
"Approach 3"), fitted the way Besiroglu et al. 2024 (arXiv:2404.10102) replicated it."""

from collections.abc import Mapping, Sequence
from typing import Self

import numpy as np
from sklearn.base import BaseEstimator

from astropt.fit_scaling.errors import FitInputError, require_positive_finite
from astropt.fit_scaling.huber_lse import grid_starts, minimise, predict_log

N_PARAMS = 5
PARAM_NAMES = ("E", "A", "B", "alpha", "beta")

# The initialisation grid of Besiroglu et al. 2024, Section 2 (e extended to 1.5).
BESIROGLU_GRID: Mapping[str, Sequence[float]] = {
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5),
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
}
# Every other value of each axis: 243 starts instead of 5400, for quick looks and tests.
COARSE_GRID: Mapping[str, Sequence[float]] = {k: v[::2] for k, v in BESIROGLU_GRID.items()}
THETA_ORDER = ("a", "b", "e", "alpha", "beta")


def start_axes(grid: Mapping[str, Sequence[float]], loss: np.ndarray) -> dict[str, list[float]]:
    """The grid's axes, the e axis extended downwards in its own step until it passes
    ln(smallest loss) - 1. E lies below every loss; the published e axis starts at -1
    (E = 0.37), set for language-model losses of 2-4 nats, so a smaller loss scale (astroPT's
    Huber losses are ~0.3) would otherwise leave E below every start. Tables whose losses are
    all 1 or more (Chinchilla's) keep the grid as published."""
    axes = {name: sorted(values) for name, values in grid.items()}
    e_axis = axes["e"]
    step = e_axis[1] - e_axis[0] if len(e_axis) > 1 else 0.5
    floor = float(np.log(loss.min())) - 1.0
    while e_axis[0] > floor:
        e_axis.insert(0, e_axis[0] - step)
    return axes


def theta_to_params(theta: np.ndarray) -> np.ndarray:
    """[a, b, e, alpha, beta] (rows of) -> [E, A, B, alpha, beta]."""
    a, b, e, alpha, beta = np.moveaxis(np.asarray(theta), -1, 0)
    return np.stack([np.exp(e), np.exp(a), np.exp(b), alpha, beta], axis=-1)


def _as_positive_array(values: object, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    require_positive_finite(array, name, lambda i: f"index {i}")
    return array


class ChinchillaLaw(BaseEstimator):
    """L(N, D) = E + A / N^alpha + B / D^beta, fitted on log L with a summed Huber loss.

    ``fit`` optimises from every point of ``init_grid`` (default: the Besiroglu et al. grid,
    5400 starts; its e axis extended for small losses, see start_axes) or from explicit
    ``starts``, keeps the best and polishes it. Fitted attributes: ``theta_`` ([a, b, e, alpha,
    beta] with A = exp(a), B = exp(b), E = exp(e)), ``E_``, ``A_``, ``B_``, ``alpha_``,
    ``beta_``, ``objective_`` (summed Huber loss), ``n_starts_``, ``start_axes_`` (the grid's
    axes as used, None with explicit starts).
    """

    def __init__(
        self, huber_delta: float = 1e-3, init_grid: Mapping[str, Sequence[float]] | None = None
    ) -> None:
        self.huber_delta = huber_delta
        self.init_grid = init_grid

    def fit(self, N: object, D: object, loss: object, starts: np.ndarray | None = None) -> Self:
        """Fit on arrays of model sizes, token counts and losses (one entry per run)."""
        n, d, y = (_as_positive_array(v, k) for k, v in (("N", N), ("D", D), ("loss", loss)))
        if not n.size == d.size == y.size:
            raise FitInputError(
                f"N, D and loss must have the same length, got {n.size}, {d.size}, {y.size}"
            )
        distinct = len(set(zip(n.tolist(), d.tolist(), strict=True)))
        if distinct < N_PARAMS:
            raise FitInputError(
                f"need at least {N_PARAMS} distinct (N, D) points to fit the {N_PARAMS} "
                f"parameters of L = E + A/N^alpha + B/D^beta, got {distinct}"
            )
        self.start_axes_ = None
        if starts is None:
            grid = BESIROGLU_GRID if self.init_grid is None else self.init_grid
            self.start_axes_ = start_axes(grid, y)
            starts = grid_starts([self.start_axes_[name] for name in THETA_ORDER])
        best = minimise(starts, np.log(np.stack([n, d])), np.log(y), self.huber_delta)
        self.theta_ = best.theta
        self.E_, self.A_, self.B_, self.alpha_, self.beta_ = theta_to_params(best.theta).tolist()
        self.objective_ = best.objective
        self.n_starts_ = best.n_starts
        return self

    def predict(self, N: object, D: object) -> np.ndarray:
        """Predicted loss at model sizes ``N`` and token counts ``D`` (broadcast together)."""
        n, d = np.broadcast_arrays(np.asarray(N, dtype=float), np.asarray(D, dtype=float))
        log_x = np.log(np.stack([n.ravel(), d.ravel()]))
        return np.exp(predict_log(self.theta_, log_x)).reshape(n.shape)

    @property
    def params_(self) -> dict[str, float]:
        """The fitted E, A, B, alpha, beta by name."""
        return dict(zip(PARAM_NAMES, theta_to_params(self.theta_).tolist(), strict=True))
