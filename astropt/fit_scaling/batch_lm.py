"""Many fits of one saturating power law at once: Levenberg-Marquardt over stacked problems.

scipy's L-BFGS-B minimises one problem per call, so thousands of small problems (every start of
the initialisation grid, every bootstrap resample) cost far more in per-call overhead than in
arithmetic. Here the problems are rows of one array: row i of ``theta`` is fitted to the points
with the weights ``weights[i]`` (a resample's counts, or ones), each row with its own damping and
its own convergence test, in whole-array numpy operations.

The objective is the one of huber_lse: the Huber loss of log L - LSE(terms), summed with the
weights. A step solves the iteratively-reweighted normal equations (Huber weights psi(r)/r, under
which the quadratic model lies above the loss in the residuals) with Marquardt's damping of the
diagonal, and is kept only where it lowers the objective.
"""

from dataclasses import dataclass

import numpy as np

# Rows per chunk, as a budget of row x point products: bounds memory (a few arrays of this size).
_CHUNK_ELEMENTS = 2_000_000
# Marquardt damping, relative to the diagonal; its floor keeps a rank-deficient system (a resample
# with as many distinct points as parameters) solvable.
_DAMPING_START, _DAMPING_MIN, _DAMPING_MAX = 1e-3, 1e-9, 1e15
_DAMPING_DOWN, _DAMPING_UP = 3.0, 4.0
# A row has converged when a kept step lowers its objective by less than this fraction, or when
# no step does even at the largest damping.
_RELATIVE_DECREASE = 1e-10


@dataclass(frozen=True)
class Refined:
    theta: np.ndarray  # (m, p)
    objective: np.ndarray  # (m,)
    converged: np.ndarray  # (m,) bool


def _residuals(theta: np.ndarray, log_x: np.ndarray, log_y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Log residuals (m, n) and the softmax shares of the k + 1 terms (m, k + 1, n)."""
    k = log_x.shape[0]
    terms = np.empty((theta.shape[0], k + 1, log_x.shape[1]))
    terms[:, :k] = theta[:, :k, None] - theta[:, k + 1 :, None] * log_x
    terms[:, k] = theta[:, k, None]
    top = terms.max(axis=1)
    shares = np.exp(terms - top[:, None])
    total = shares.sum(axis=1)
    return top + np.log(total) - log_y, shares / total[:, None]


def batch_objective(resid: np.ndarray, weights: np.ndarray, delta: float) -> np.ndarray:
    """Weighted summed Huber loss of each row of residuals."""
    clipped = np.clip(resid, -delta, delta)
    return (weights * clipped * (resid - 0.5 * clipped)).sum(axis=-1)


def _step(
    resid: np.ndarray,
    shares: np.ndarray,
    log_x: np.ndarray,
    weights: np.ndarray,
    delta: float,
    damping: np.ndarray,
) -> np.ndarray:
    """The damped IRLS step of each row."""
    k = log_x.shape[0]
    jac = np.empty((shares.shape[0], 2 * k + 1, shares.shape[2]))  # d log L / d theta
    jac[:, : k + 1] = shares
    jac[:, k + 1 :] = -shares[:, :k] * log_x
    size = np.abs(resid)
    irls = weights * np.where(size > delta, delta / np.maximum(size, delta), 1.0)
    grad = ((weights * np.clip(resid, -delta, delta))[:, None, :] * jac).sum(axis=-1)
    hess = (jac * irls[:, None, :]) @ jac.transpose(0, 2, 1)
    diag = np.diagonal(hess, axis1=1, axis2=2)
    # Marquardt scaling, kept positive where a term has no weight at any point.
    scale = diag + 1e-9 * diag.max(axis=1, keepdims=True) + 1e-300
    system = hess + (damping[:, None] * scale)[:, :, None] * np.eye(diag.shape[1])
    return np.linalg.solve(system, -grad[..., None])[..., 0]


def _refine_chunk(
    theta: np.ndarray,
    log_x: np.ndarray,
    log_y: np.ndarray,
    delta: float,
    weights: np.ndarray,
    iterations: int,
) -> Refined:
    theta = theta.copy()
    resid, shares = _residuals(theta, log_x, log_y)
    value = batch_objective(resid, weights, delta)
    damping = np.full(theta.shape[0], _DAMPING_START)
    active = np.isfinite(value)
    converged = np.zeros(theta.shape[0], dtype=bool)
    for _ in range(iterations):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        w = weights[rows] if weights.shape[0] > 1 else weights
        step = _step(resid[rows], shares[rows], log_x, w, delta, damping[rows])
        trial = theta[rows] + step
        trial_resid, trial_shares = _residuals(trial, log_x, log_y)
        trial_value = batch_objective(trial_resid, w, delta)
        better = trial_value < value[rows]
        kept = rows[better]
        decrease = (value[kept] - trial_value[better]) / np.maximum(value[kept], 1e-300)
        theta[kept] = trial[better]
        resid[kept] = trial_resid[better]
        shares[kept] = trial_shares[better]
        value[kept] = trial_value[better]
        damping[rows] = np.where(
            better,
            np.maximum(damping[rows] / _DAMPING_DOWN, _DAMPING_MIN),
            damping[rows] * _DAMPING_UP,
        )
        done = np.concatenate(
            [kept[decrease < _RELATIVE_DECREASE], rows[damping[rows] > _DAMPING_MAX]]
        )
        converged[done] = True
        active[done] = False
    return Refined(theta=theta, objective=value, converged=converged)


def refine(
    theta: np.ndarray,
    log_x: np.ndarray,
    log_y: np.ndarray,
    delta: float,
    weights: np.ndarray | None = None,
    iterations: int = 100,
) -> Refined:
    """At most ``iterations`` damped IRLS steps for each row of ``theta`` (m, p).

    ``weights`` is (m, n) per-row point weights, or None for unit weights on every row.
    """
    theta = np.asarray(theta, dtype=float)
    n = log_x.shape[1]
    unit = np.ones((1, n))
    rows = max(1, _CHUNK_ELEMENTS // max(n, 1))
    parts = []
    for start in range(0, theta.shape[0], rows):
        chunk = slice(start, start + rows)
        w = unit if weights is None else weights[chunk]
        parts.append(_refine_chunk(theta[chunk], log_x, log_y, delta, w, iterations))
    return Refined(
        theta=np.concatenate([p.theta for p in parts]),
        objective=np.concatenate([p.objective for p in parts]),
        converged=np.concatenate([p.converged for p in parts]),
    )
