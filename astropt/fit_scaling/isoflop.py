"""IsoFLOP analysis (Hoffmann et al. 2022, "Approach 2").

Cells are grouped by FLOP budget; per budget with at least three model sizes a parabola of loss
in ln N locates the loss-optimal size N* (kept when it lies within the sampled sizes); a power
law N* = k C^a through the minima gives the allocation exponent. Its uncertainty comes from the
least-squares standard error and from a bootstrap that resamples cells within each usable budget
(a resample drops budgets whose parabola no longer has a usable minimum).
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from astropt.fit_scaling.bootstrap import Estimate, resample_indices, summarise
from astropt.fit_scaling.compute import ComputeModel
from astropt.fit_scaling.grouping import group_by_tolerance
from astropt.fit_scaling.power_law import LogLogFit, loglog_fit

MIN_SIZES = 3
Coef = tuple[float, float, float]  # of loss in ln N, highest power first


@dataclass(frozen=True)
class Parabola:
    """loss = c2 (ln N)^2 + c1 ln N + c0 for one budget, and its minimum."""

    budget: float
    coef: Coef
    N_opt: float
    D_opt: float
    loss_opt: float
    cells: tuple[str, ...]

    def predict(self, N: np.ndarray) -> np.ndarray:
        return np.polyval(self.coef, np.log(N))

    def to_dict(self) -> dict[str, object]:
        return {
            "budget": self.budget,
            "N_opt": self.N_opt,
            "D_opt": self.D_opt,
            "loss_opt": self.loss_opt,
            "parabola_coef_lnN": list(self.coef),
            "cells": list(self.cells),
        }


@dataclass(frozen=True)
class IsoflopResult:
    parabolas: tuple[Parabola, ...]
    skipped: tuple[tuple[float, str], ...]
    frontier: LogLogFit
    exponent: Estimate
    n_resamples: int
    n_failed: int

    def to_dict(self) -> dict[str, object]:
        return {
            "a": self.exponent.to_dict(),
            "a_least_squares_se": self.frontier.slope.se,
            "b": 1.0 - self.exponent.value,
            "N_opt_prefactor": float(np.exp(self.frontier.intercept)),
            "bootstrap": {"resamples": self.n_resamples, "failed": self.n_failed},
            "budgets": [p.to_dict() for p in self.parabolas],
            "skipped_budgets": [{"budget": b, "reason": r} for b, r in self.skipped],
        }


def budgets_of(cells: pd.DataFrame, rel_tol: float) -> np.ndarray:
    """The FLOP budget of each cell: the ``budget`` column where given, else C = 6 N D grouped
    to a relative tolerance."""
    if "budget" in cells and cells["budget"].notna().all():
        return cells["budget"].to_numpy(dtype=float)
    return group_by_tolerance(cells["C"].to_numpy(), rel_tol)


def _parabola(log_n: np.ndarray, loss: np.ndarray) -> Coef | str:
    """Coefficients of the least-squares parabola, or why it gives no usable minimum.

    A minimum outside the sampled sizes is an extrapolation of the parabola, not a measured
    optimum (and makes the bootstrap heavy-tailed), so such budgets are left out.
    """
    distinct = np.unique(log_n).size
    if distinct < MIN_SIZES:
        return f"{distinct} model size(s); need {MIN_SIZES}"
    c2, c1, c0 = np.polyfit(log_n, loss, 2)
    if c2 <= 0:
        return "loss is not convex in log N (parabola opens downward)"
    n_opt = np.exp(-c1 / (2.0 * c2))
    n_min, n_max = np.exp(log_n.min()), np.exp(log_n.max())
    if not n_min <= n_opt <= n_max:
        return f"minimum at N = {n_opt:.3g} outside the sampled sizes {n_min:.3g}-{n_max:.3g}"
    return float(c2), float(c1), float(c0)


def _fit_budgets(
    log_n: np.ndarray, loss: np.ndarray, budget: np.ndarray
) -> tuple[dict[float, Coef], list[tuple[float, str]]]:
    """Parabola coefficients per usable budget, and (budget, reason) for the others."""
    fits, skipped = {}, []
    for b in np.unique(budget):
        members = budget == b
        coef = _parabola(log_n[members], loss[members])
        if isinstance(coef, str):
            skipped.append((float(b), coef))
        else:
            fits[float(b)] = coef
    return fits, skipped


def _vertex(coef: Coef) -> float:
    """ln N at the parabola's minimum."""
    return -coef[1] / (2.0 * coef[0])


def _frontier(fits: dict[float, Coef]) -> LogLogFit | None:
    """N* = k C^a through the minima (None with fewer than two)."""
    if len(fits) < 2:
        return None
    n_opt = np.exp([_vertex(coef) for coef in fits.values()])
    return loglog_fit(np.array(list(fits)), n_opt)


def isoflop(
    cells: pd.DataFrame,
    rel_tol: float,
    n_resamples: int,
    seed: int,
    level: float,
    compute: ComputeModel | None = None,
) -> IsoflopResult | str:
    """Run the analysis, or return why it cannot be done (fewer than two usable budgets).
    ``compute`` converts a budget and N* into D* (default C = 6 N D)."""
    budget = budgets_of(cells, rel_tol)
    log_n, loss = np.log(cells["N"].to_numpy()), cells["loss"].to_numpy()
    fits, skipped = _fit_budgets(log_n, loss, budget)
    frontier = _frontier(fits)
    if frontier is None:
        return f"{len(fits)} budget(s) with >= {MIN_SIZES} model sizes and a convex minimum"
    parabolas = []
    for b, coef in fits.items():
        x_opt = _vertex(coef)
        parabolas.append(
            Parabola(
                budget=b,
                coef=coef,
                N_opt=float(np.exp(x_opt)),
                D_opt=float((compute or ComputeModel()).tokens(np.exp(x_opt), b)),
                loss_opt=float(np.polyval(coef, x_opt)),
                cells=tuple(cells["cell"][budget == b]),
            )
        )
    used = np.isin(budget, list(fits))
    log_n, loss, groups = log_n[used], loss[used], budget[used]
    rng = np.random.default_rng(seed)
    slopes = np.full(n_resamples, np.nan)
    for i in range(n_resamples):
        idx = resample_indices(rng, groups)
        refit = _frontier(_fit_budgets(log_n[idx], loss[idx], groups[idx])[0])
        if refit is not None:
            slopes[i] = refit.slope.value
    return IsoflopResult(
        parabolas=tuple(parabolas),
        skipped=tuple(skipped),
        frontier=frontier,
        exponent=summarise(frontier.slope.value, slopes, level),
        n_resamples=n_resamples,
        n_failed=int(np.isnan(slopes).sum()),
    )
