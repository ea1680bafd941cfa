"""Single-variable power laws: the saturating L(x) = E + A / x^alpha (robust, log space) and the
pure y = k x^a (least squares in log-log space) used for N_opt(C) through optimum points."""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from astropt.fit_scaling.bootstrap import Estimate
from astropt.fit_scaling.grouping import group_by_tolerance
from astropt.fit_scaling.huber_lse import grid_starts, minimise
from astropt.fit_scaling.parametric import BESIROGLU_GRID

MIN_POINTS = 3


@dataclass(frozen=True)
class LogLogFit:
    """log y = intercept + slope log x; ``slope.se`` is the least-squares standard error (None
    with only two points)."""

    slope: Estimate
    intercept: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.exp(self.intercept + self.slope.value * np.log(x))


def loglog_fit(x: np.ndarray, y: np.ndarray) -> LogLogFit:
    """Ordinary least squares of log y on log x (needs two distinct x)."""
    lx, ly = np.log(x), np.log(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    se = None
    if lx.size > 2:
        resid = ly - (intercept + slope * lx)
        sxx = float(((lx - lx.mean()) ** 2).sum())
        se = float(np.sqrt(resid @ resid / (lx.size - 2) / sxx))
    return LogLogFit(slope=Estimate(value=float(slope), se=se), intercept=float(intercept))


@dataclass(frozen=True)
class SaturatingFit:
    """L(x) = E + coef / x^exponent fitted on a slice of cells where the other variable is
    (nearly) constant at ``held_at``."""

    variable: str
    held: str
    held_at: float
    E: float
    coef: float
    exponent: float
    cells: tuple[str, ...]

    @property
    def names(self) -> tuple[str, str]:
        """Names of the coefficient and exponent: (A, alpha) for N, (B, beta) for D."""
        return ("A", "alpha") if self.variable == "N" else ("B", "beta")

    @property
    def law(self) -> str:
        coef, exponent = self.names
        return f"L({self.variable}) = E + {coef} / {self.variable}^{exponent}"

    def to_dict(self) -> dict[str, object]:
        coef, exponent = self.names
        return {
            "law": self.law,
            self.held: self.held_at,
            "E": self.E,
            coef: self.coef,
            exponent: self.exponent,
            "cells": list(self.cells),
        }


def fit_saturating(x: np.ndarray, loss: np.ndarray, delta: float) -> tuple[float, float, float]:
    """(E, coef, exponent) of L = E + coef / x^exponent, by the same Huber/LSE recipe and grid
    axes as the two-variable law."""
    axes = [BESIROGLU_GRID["a"], BESIROGLU_GRID["e"], BESIROGLU_GRID["alpha"]]
    best = minimise(grid_starts(axes), np.log(x)[None, :], np.log(loss), delta)
    c, e, p = best.theta
    return float(np.exp(e)), float(np.exp(c)), float(p)


def slice_fit(
    cells: pd.DataFrame, variable: str, held: str, rel_tol: float, delta: float
) -> SaturatingFit | str:
    """Fit L(variable) on the cells whose ``held`` column is in its largest group.

    Returns the fit, or a reason why it was skipped (fewer than 3 distinct values).
    """
    labels = group_by_tolerance(cells[held].to_numpy(), rel_tol)
    chosen = cells[labels == labels.max()]
    distinct = chosen[variable].nunique()
    if distinct < MIN_POINTS:
        return (
            f"only {distinct} distinct {variable} at the largest {held} "
            f"(~{labels.max():.3g}); need {MIN_POINTS}"
        )
    E, coef, exponent = fit_saturating(
        chosen[variable].to_numpy(), chosen["loss"].to_numpy(), delta
    )
    return SaturatingFit(
        variable=variable,
        held=held,
        held_at=float(labels.max()),
        E=E,
        coef=coef,
        exponent=exponent,
        cells=tuple(chosen["cell"]),
    )
