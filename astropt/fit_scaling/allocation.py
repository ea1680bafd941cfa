"""Compute-optimal allocation under L(N, D) = E + A / N^alpha + B / D^beta with C = 6 N D.

Minimising L at fixed C gives (Hoffmann et al. 2022, Eq. 4)
N_opt(C) = G (C / 6)^a, D_opt(C) = G^-1 (C / 6)^b, G = (alpha A / (beta B))^(1 / (alpha + beta)),
a = beta / (alpha + beta), b = alpha / (alpha + beta).

Parameters are arrays whose last axis is [E, A, B, alpha, beta], so a whole bootstrap sample is
evaluated at once.
"""

import numpy as np


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


def compute_optimal(params: np.ndarray, compute: np.ndarray) -> dict[str, np.ndarray]:
    """N_opt, D_opt and the predicted loss there, each of shape params.shape[:-1] + (n_C,)."""
    q = {name: np.asarray(value)[..., None] for name, value in derived(params).items()}
    c6 = np.asarray(compute, dtype=float).ravel() / 6.0
    n_opt = q["G"] * c6 ** q["a"]
    d_opt = c6 ** q["b"] / q["G"]
    loss = q["E"] + q["A"] / n_opt ** q["alpha"] + q["B"] / d_opt ** q["beta"]
    return {"N_opt": n_opt, "D_opt": d_opt, "loss": loss}
