"""The fit checks itself: findings that say when a fitted law is not a law, or not to be trusted
far. Each finding has a level, a code and a message; the report prints them first.

- error: the parametric law has degenerated; its numbers should not be quoted.
  * ``exponent_range``: alpha or beta outside (0.05, 2). Published fits of this law sit around
    0.1-0.8 (Kaplan et al. 2020: 0.076 and 0.095 in their form; Hoffmann et al. 2022: 0.34 and
    0.28; Besiroglu et al. 2024: 0.35 and 0.37). Below 0.05 a term changes by less than 11% over
    10x in N or D and trades off against E; above 2 it falls 100-fold per 10x, so it fits a
    cell or two, not a trend; 2 is also the largest exponent the start grid tries.
  * ``coefficient_magnitude``: A or B above 1e12, or a term contributing less than 1e-6 of the
    predicted loss at every cell (the term plays no part in the fit, its parameters are free).
- warning: usable with care.
  * ``init_grid_edge``: a fitted parameter outside the range of the start grid (no start
    bracketed it; the optimum may be one of several).
  * ``approaches_disagree``: the allocation exponent a of the parametric fit, the IsoFLOP
    parabolas and the envelope, with intervals that do not overlap.
  * ``bootstrap_failures``: resamples that could not be fitted, counted by reason, and more than
    1% of refits not converged.
  * ``coverage``: fewer than 3 distinct model sizes (or token counts), or a span under 10x.
  * ``wide_interval``: an interval of E, alpha, beta or a wider than the value it brackets; of
    the scale coefficients A and B (uncertain by factors: Chinchilla's B has se 0.6 B), one
    spanning more than 100x.
  * ``lr_at_edge``: the best learning rate of an (N, D) is the smallest or largest tried.
  * ``repeated_data``: cells repeat their data and the fit counts repeats as unique tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import norm

from astropt.fit_scaling.grouping import group_by_tolerance
from astropt.fit_scaling.parametric import THETA_ORDER

if TYPE_CHECKING:
    from astropt.fit_scaling.analysis import Analysis, ParametricResult

ERROR, WARNING = "error", "warning"
EXPONENT_RANGE = (0.05, 2.0)
MAX_COEFFICIENT = 1e12
MIN_TERM_SHARE = 1e-6
MIN_DISTINCT, MIN_SPAN = 3, 10.0
MAX_COEFFICIENT_RATIO = 100.0  # an interval of A or B spanning more than this factor is wide
UNCONVERGED_SHARE = 0.01  # a refit or two in a thousand stops short of the test on a slow valley
THETA_LABELS = {"a": "ln A", "b": "ln B", "e": "ln E", "alpha": "alpha", "beta": "beta"}


@dataclass(frozen=True)
class Check:
    level: str
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _interval(lo: float | None, hi: float | None) -> str:
    return "" if lo is None or hi is None else f" [{lo:.4g}, {hi:.4g}]"


def _exponents(part: ParametricResult) -> list[Check]:
    low, high = EXPONENT_RANGE
    found = []
    for name in ("alpha", "beta"):
        value = part.estimates[name].value
        if not low < value < high:
            found.append(
                Check(
                    ERROR,
                    "exponent_range",
                    f"{name} = {value:.4g} is outside the plausible range ({low:g}, {high:g}): "
                    "the law has degenerated (see checks.py for the range)",
                )
            )
    return found


def _magnitudes(analysis: Analysis, part: ParametricResult) -> list[Check]:
    cells, law = analysis.data.cells, part.model
    predicted = law.predict(cells["N"], cells["D"])
    found = []
    for coef, exponent, variable in (("A", "alpha", "N"), ("B", "beta", "D")):
        value, power = getattr(law, f"{coef}_"), getattr(law, f"{exponent}_")
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            share = float(np.nanmax(value / cells[variable].to_numpy() ** power / predicted))
        if value > MAX_COEFFICIENT:
            found.append(
                Check(ERROR, "coefficient_magnitude", f"{coef} = {value:.4g} is absurd (> 1e12)")
            )
        elif share < MIN_TERM_SHARE:
            found.append(
                Check(
                    ERROR,
                    "coefficient_magnitude",
                    f"{coef} / {variable}^{exponent} is at most {share:.4g} of the loss at the "
                    "cells: the term plays no part in the fit",
                )
            )
    return found


def _grid_edge(analysis: Analysis, part: ParametricResult) -> list[Check]:
    grid = part.model.start_axes_ or analysis.settings.init_grid
    found = []
    for name, value in zip(THETA_ORDER, part.model.theta_, strict=True):
        low, high = min(grid[name]), max(grid[name])
        if not low <= value <= high:
            found.append(
                Check(
                    WARNING,
                    "init_grid_edge",
                    f"{THETA_LABELS[name]} = {value:.4g} lies outside the start grid's range "
                    f"[{low:g}, {high:g}]: no start bracketed it; the optimum may be one of "
                    "several",
                )
            )
    return found


def _allocation_exponents(analysis: Analysis) -> dict[str, tuple[float, float, float]]:
    """a with its interval from each approach that gives one (the envelope's from its
    least-squares se, which is optimistic)."""
    found = {}
    if (part := analysis.parametric) is not None and part.estimates["a"].lo is not None:
        a = part.estimates["a"]
        found["parametric"] = (a.value, a.lo, a.hi)
    if (iso := analysis.isoflop) is not None and iso.exponent.lo is not None:
        found["IsoFLOP"] = (iso.exponent.value, iso.exponent.lo, iso.exponent.hi)
    if (env := analysis.envelope) is not None and env.frontier.slope.se is not None:
        z = float(norm.ppf(0.5 + analysis.settings.level / 2.0))
        value, se = env.frontier.slope.value, env.frontier.slope.se
        found["envelope"] = (value, value - z * se, value + z * se)
    return found


def _agreement(analysis: Analysis) -> list[Check]:
    found = _allocation_exponents(analysis)
    apart = [
        (one, other)
        for i, one in enumerate(found)
        for other in list(found)[i + 1 :]
        if found[one][1] > found[other][2] or found[other][1] > found[one][2]
    ]
    if not apart:
        return []
    listed = ", ".join(f"{k} {v[0]:.4g}{_interval(v[1], v[2])}" for k, v in found.items())
    pairs = "; ".join(f"{one} vs {other}" for one, other in apart)
    level = f"{100 * analysis.settings.level:g}%"
    return [
        Check(
            WARNING,
            "approaches_disagree",
            f"the allocation exponent a disagrees beyond its {level} intervals ({pairs}): {listed}",
        )
    ]


def _bootstrap(analysis: Analysis) -> list[Check]:
    found = []
    if (part := analysis.parametric) is not None:
        total = part.bootstrap.n_resamples
        for reason, count in part.bootstrap.failures.items():
            message = f"{count} of {total} parametric bootstrap resamples had {reason}"
            found.append(Check(WARNING, "bootstrap_failures", message))
        unconverged = part.bootstrap.n_unconverged
        if unconverged > UNCONVERGED_SHARE * total:
            found.append(
                Check(
                    WARNING,
                    "bootstrap_failures",
                    f"{unconverged} of {total} parametric bootstrap refits had not converged "
                    "(kept as they stand): the objective is flat along some direction, the "
                    "parameters are not identified by these cells",
                )
            )
    if (iso := analysis.isoflop) is not None and iso.n_failed:
        found.append(
            Check(
                WARNING,
                "bootstrap_failures",
                f"{iso.n_failed} of {iso.n_resamples} IsoFLOP bootstrap resamples left fewer "
                "than 2 budgets with a usable minimum",
            )
        )
    return found


def _coverage(analysis: Analysis) -> list[Check]:
    cells, found = analysis.data.cells, []
    for column, what in (("N", "model sizes"), ("D", "token counts")):
        values = cells[column].to_numpy()
        distinct = np.unique(group_by_tolerance(values, analysis.settings.group_tol)).size
        span = float(values.max() / values.min())
        if distinct < MIN_DISTINCT or span < MIN_SPAN:
            found.append(
                Check(
                    WARNING,
                    "coverage",
                    f"{distinct} distinct {what} spanning {span:.4g}x: a power law in {column} "
                    f"needs at least {MIN_DISTINCT} spanning {MIN_SPAN:g}x",
                )
            )
    return found


def _is_wide(name: str, value: float, lo: float, hi: float) -> bool:
    if name in ("A", "B"):
        return not lo > 0 or hi / lo > MAX_COEFFICIENT_RATIO
    return hi - lo > abs(value)


def _wide_intervals(part: ParametricResult) -> list[Check]:
    wide = [
        f"{name} {est.value:.4g}{_interval(est.lo, est.hi)}"
        for name, est in part.estimates.items()
        if name in ("E", "A", "B", "alpha", "beta", "a")
        and est.lo is not None
        and est.hi is not None
        and _is_wide(name, est.value, est.lo, est.hi)
    ]
    if not wide:
        return []
    message = f"intervals too wide to be informative: {'; '.join(wide)}"
    return [Check(WARNING, "wide_interval", message)]


def _learning_rates(analysis: Analysis) -> list[Check]:
    edges = [c for c in analysis.lr_choices if c.at_edge]
    if not edges:
        return []
    listed = "; ".join(
        f"N = {c.N:.4g}, D = {c.D:.4g}: {c.best:g} of {list(c.tried)}" for c in edges
    )
    return [
        Check(
            WARNING,
            "lr_at_edge",
            f"the best {edges[0].axis} is the smallest or largest tried at {len(edges)} of "
            f"{len(analysis.lr_choices)} (N, D), so the best rate may lie beyond: {listed}",
        )
    ]


def run_checks(analysis: Analysis) -> list[Check]:
    """Every finding, errors first."""
    found = []
    if (part := analysis.parametric) is not None:
        found += _exponents(part) + _magnitudes(analysis, part) + _grid_edge(analysis, part)
        found += _wide_intervals(part)
    found += _agreement(analysis) + _bootstrap(analysis) + _coverage(analysis)
    found += _learning_rates(analysis)
    repetition = analysis.repetition
    if repetition.n_repeated and not repetition.applied:
        found.append(Check(WARNING, "repeated_data", repetition.summary))
    return sorted(found, key=lambda check: check.level != ERROR)
