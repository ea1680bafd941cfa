"""Compute-optimal allocation under L(N, D) = E + A / N^alpha + B / D^beta.

With C = 6 N D, minimising L at fixed C gives (Hoffmann et al. 2022, Eq. 4)
N_opt(C) = G (C / 6)^a, D_opt(C) = G^-1 (C / 6)^b, G = (alpha A / (beta B))^(1 / (alpha + beta)),
a = beta / (alpha + beta), b = alpha / (alpha + beta).
With attention compute, C = D x FLOPs per token(N) (compute.ComputeModel) has no closed form:
L(N, C / FLOPs per token(N)) is minimised over ln N numerically (golden section), starting from a
bracket around the 6 N D optimum.

Parameters are arrays whose last axis is [E, A, B, alpha, beta], so a whole bootstrap sample is
evaluated at once.
"""

from collections.abc import Callable

import numpy as np

from astropt.fit_scaling.compute import ComputeModel

_BRACKET = 5.0  # ln N either side of the 6 N D optimum searched under attention compute
_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0
_GOLDEN_STEPS = 80  # shrinks the bracket by 0.618^80 ~ 2e-17


def derived(params: np.ndarray) -> dict[str, np.ndarray]:
    """The law's parameters and the allocation exponents a, b and prefactor G, by name."""
    E, A, B, alpha, beta = np.moveaxis(np.asarray(params, dtype=float), -1, 0)
    return {
        "E": E,
        "A": A,
        "B": B,
        "alpha": alpha,
        "beta": beta,
        "a": beta / (alpha + beta),
        "b": alpha / (alpha + beta),
        "G": (alpha * A / (beta * B)) ** (1.0 / (alpha + beta)),
    }


def _loss(q: dict[str, np.ndarray], N: np.ndarray, D: np.ndarray) -> np.ndarray:
    return q["E"] + q["A"] / N ** q["alpha"] + q["B"] / D ** q["beta"]


def _minimise_ln_n(
    loss_at: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Golden-section minimum of a unimodal function of ln N, elementwise over the brackets."""
    for _ in range(_GOLDEN_STEPS):
        left, right = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
        lower = loss_at(left) < loss_at(right)
        hi, lo = np.where(lower, right, hi), np.where(lower, lo, left)
    return (lo + hi) / 2.0


def compute_optimal(
    params: np.ndarray, compute: np.ndarray, model: ComputeModel | None = None
) -> dict[str, np.ndarray]:
    """N_opt, D_opt and the predicted loss there, each of shape params.shape[:-1] + (n_C,);
    ``model`` says how compute is counted (default C = 6 N D)."""
    q = {name: np.asarray(value)[..., None] for name, value in derived(params).items()}
    c = np.asarray(compute, dtype=float).ravel()
    n_opt = q["G"] * (c / 6.0) ** q["a"]
    if model is not None and model.excess_coef != 0.0:
        ln_n = np.log(n_opt)

        def loss_at(x: np.ndarray) -> np.ndarray:
            return _loss(q, np.exp(x), model.tokens(np.exp(x), c))

        n_opt = np.exp(_minimise_ln_n(loss_at, ln_n - _BRACKET, ln_n + _BRACKET))
    d_opt = (model or ComputeModel()).tokens(n_opt, c)
    return {"N_opt": n_opt, "D_opt": d_opt, "loss": _loss(q, n_opt, d_opt)}
