"""Robust fit of saturating power laws in log space (Hoffmann et al. 2022, Approach 3).

A law with k power-law terms, L = exp(e) + sum_i exp(c_i) / x_i^p_i, is fitted as
log L ~ LSE(c_1 - p_1 log x_1, ..., c_k - p_k log x_k, e) with a Huber loss summed over points.
The parameter vector is laid out as theta = [c_1..c_k, e, p_1..p_k]; for k = 2 that is
[a, b, e, alpha, beta] in the notation of Besiroglu et al. 2024 (arXiv:2404.10102).
"""

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import ThreadpoolController

from astropt.fit_scaling.batch_lm import refine

# L-BFGS-B's default ftol compares the decrease of f with max(|f|, 1), but a summed Huber loss
# with delta = 1e-3 is itself ~1e-3, so the starts stop early (parameters good to ~1e-4). The
# best start is therefore polished without the ftol test, until the gradient or the line search
# gives out, which is as precise as double precision allows here.
_POLISH_OPTIONS = {"ftol": 0.0, "gtol": 1e-10, "maxiter": 10_000}
# L-BFGS-B calls BLAS on 5-vectors; with a multi-threaded BLAS on a busy machine the thread
# hand-offs cost more than the arithmetic (measured 2-5x slower), so minimise runs single-threaded.
_BLAS = ThreadpoolController()
# Start selection by successive halving: every start gets SCREEN_STEPS batched damped steps, the
# better half goes on for another SCREEN_STEPS, and so on until SHORTLIST starts are left; L-BFGS
# then runs from those. On the Chinchilla points and on 36 small degenerate tables this found the
# same optimum (objective within 1e-6, relative) as L-BFGS from every start of the grid.
SCREEN_STEPS, SHORTLIST = 10, 8
# Bootstrap refits: the most damped steps a resample gets to converge. One that has not is kept as
# it stands and counted: its objective is flat along some direction (parameters not identified).
REFINE_STEPS = 1000


@dataclass(frozen=True)
class Minimum:
    """Best optimum over all starts."""

    theta: np.ndarray
    objective: float
    n_starts: int


def _terms(theta: np.ndarray, log_x: np.ndarray) -> np.ndarray:
    """The k + 1 log-terms inside the LSE, shape (k + 1, n)."""
    k = log_x.shape[0]
    terms = np.empty((k + 1, log_x.shape[1]))
    terms[:k] = theta[:k, None] - theta[k + 1 :, None] * log_x
    terms[k] = theta[k]
    return terms


def predict_log(theta: np.ndarray, log_x: np.ndarray) -> np.ndarray:
    """log L predicted at the points ``log_x`` (shape (k, n))."""
    terms = _terms(theta, log_x)
    top = terms.max(axis=0)
    return top + np.log(np.exp(terms - top).sum(axis=0))


def huber_objective(
    theta: np.ndarray, log_x: np.ndarray, log_y: np.ndarray, delta: float
) -> tuple[float, np.ndarray]:
    """Summed Huber loss of the log residuals and its analytic gradient."""
    k = log_x.shape[0]
    terms = _terms(theta, log_x)
    top = terms.max(axis=0)
    weights = np.exp(terms - top)
    total = weights.sum(axis=0)
    resid = top + np.log(total) - log_y
    clipped = np.clip(resid, -delta, delta)  # the Huber derivative
    value = float(clipped @ (resid - 0.5 * clipped))
    dterm = weights * (clipped / total)  # d value / d term_j, per point
    grad = np.empty_like(theta)
    grad[:k] = dterm[:k].sum(axis=1)
    grad[k] = dterm[k].sum()
    grad[k + 1 :] = -(dterm[:k] * log_x).sum(axis=1)
    return value, grad


def grid_starts(axes: Sequence[Sequence[float]]) -> np.ndarray:
    """All combinations of the axis values, one start per row, in theta order."""
    return np.array(list(itertools.product(*axes)), dtype=float)


def _shift_coefficients(theta: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """theta (or rows of starts) with each c_i replaced by c_i + p_i shift_i.

    c - p (ln x - m) = (c - p m) - p ln x, so shift = -m maps a law on ln x to the same law on
    ln x - m, and shift = m maps it back.
    """
    k = shift.size
    shifted = np.array(theta, dtype=float)
    shifted[..., :k] += shifted[..., k + 1 :] * shift
    return shifted


def _lbfgs(start: np.ndarray, args: tuple, options: dict | None = None) -> tuple[np.ndarray, float]:
    result = minimize(
        huber_objective, start, args=args, jac=True, method="L-BFGS-B", options=options
    )
    return result.x, float(result.fun)


def _shortlist(
    starts: np.ndarray, log_x: np.ndarray, log_y: np.ndarray, delta: float
) -> np.ndarray:
    """The SHORTLIST most promising starts, refined, by successive halving (see SCREEN_STEPS)."""
    candidates = starts
    while True:
        refined = refine(candidates, log_x, log_y, delta, iterations=SCREEN_STEPS)
        order = np.argsort(np.nan_to_num(refined.objective, nan=np.inf), kind="stable")
        if len(candidates) <= SHORTLIST:
            return refined.theta[order]
        candidates = refined.theta[order[: max(SHORTLIST, len(candidates) // 2)]]


def minimise(starts: np.ndarray, log_x: np.ndarray, log_y: np.ndarray, delta: float) -> Minimum:
    """Local optimisation from every start, the lowest objective kept and polished.

    All starts are refined together (batched damped steps, successive halving); L-BFGS runs
    from the SHORTLIST best, and the best of those is polished. The optimisation runs on ln x
    centred on its mean (starts mapped exactly, the result mapped back): the same law and
    objective, without the strong c_i / p_i coupling that ln N ~ 20 creates.
    """
    centre = log_x.mean(axis=1)
    args = (log_x - centre[:, None], log_y, delta)
    shortlist = _shortlist(_shift_coefficients(starts, -centre), *args)
    best_x, best_f = shortlist[0], np.inf
    with _BLAS.limit(limits=1, user_api="blas"):
        for start in shortlist:
            x, f = _lbfgs(start, args)
            if f < best_f:
                best_x, best_f = x, f
        polished_x, polished_f = _lbfgs(best_x, args, _POLISH_OPTIONS)
    if polished_f <= best_f:
        best_x, best_f = polished_x, polished_f
    theta = _shift_coefficients(best_x, centre)
    return Minimum(theta=theta, objective=best_f, n_starts=len(starts))


def minimise_each(
    starts: np.ndarray, log_x: np.ndarray, log_y: np.ndarray, delta: float, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One fit per row of ``counts`` (m, n): how often each point enters that fit (a bootstrap
    resample), from that row's starts ``starts[i]`` (s, p). Returns the optima (m, p) and
    whether each converged within REFINE_STEPS.

    Every start gets SCREEN_STEPS batched steps; each row's best goes on to convergence.
    """
    m, s, p = starts.shape
    centre = log_x.mean(axis=1)
    centred = log_x - centre[:, None]
    flat = _shift_coefficients(starts.reshape(m * s, p), -centre)
    screened = refine(
        flat, centred, log_y, delta, np.repeat(counts, s, axis=0), iterations=SCREEN_STEPS
    )
    scores = np.nan_to_num(screened.objective, nan=np.inf).reshape(m, s)
    best = screened.theta.reshape(m, s, p)[np.arange(m), scores.argmin(axis=1)]
    final = refine(best, centred, log_y, delta, counts, iterations=REFINE_STEPS)
    return _shift_coefficients(final.theta, centre), final.converged
