"""Runs the selected methods on a FitData and collects their results (or why each was skipped)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from astropt.fit_scaling.allocation import compute_optimal, derived
from astropt.fit_scaling.bootstrap import Estimate, LawBootstrap, bootstrap_law, summarise
from astropt.fit_scaling.checks import Check, run_checks
from astropt.fit_scaling.compute import ComputeChoice, ComputeModel
from astropt.fit_scaling.envelope import EnvelopeResult, envelope
from astropt.fit_scaling.errors import FitInputError
from astropt.fit_scaling.extrapolation import ExtrapolationResult, extrapolation_check
from astropt.fit_scaling.isoflop import IsoflopResult, isoflop
from astropt.fit_scaling.lr_selection import LrChoice
from astropt.fit_scaling.parametric import BESIROGLU_GRID, ChinchillaLaw, theta_to_params
from astropt.fit_scaling.power_law import SaturatingFit, slice_fit
from astropt.fit_scaling.preparation import prepare
from astropt.fit_scaling.repetition import Repetition
from astropt.fit_scaling.sources import FitData

T = TypeVar("T")
METHODS = ("parametric", "isoflop", "envelope", "power-law", "extrapolation")


@dataclass(frozen=True)
class Settings:
    """``predict_compute`` empty means: the largest observed compute, and 10x and 100x it.
    ``compute`` None means attention compute where every cell has it, else 6 N D
    (compute.py); ``data_constrained`` is one of repetition.MODES."""

    methods: tuple[str, ...] = METHODS
    n_bootstrap: int = 1000
    seed: int = 0
    level: float = 0.95
    predict_compute: tuple[float, ...] = ()
    holdout_fraction: float = 0.2
    group_tol: float = 0.1
    init_grid: Mapping[str, Sequence[float]] = field(default_factory=lambda: BESIROGLU_GRID)
    huber_delta: float = 1e-3
    n_perturbed: int = 2
    compute: str | None = None
    data_constrained: str = "auto"


@dataclass(frozen=True)
class Allocation:
    """Compute-optimal N, D and predicted loss at one compute budget."""

    compute: float
    N_opt: Estimate
    D_opt: Estimate
    loss: Estimate

    def to_dict(self) -> dict[str, object]:
        return {
            "compute": self.compute,
            "N_opt": self.N_opt.to_dict(),
            "D_opt": self.D_opt.to_dict(),
            "loss": self.loss.to_dict(),
        }


@dataclass(frozen=True)
class ParametricResult:
    model: ChinchillaLaw
    estimates: dict[str, Estimate]
    bootstrap: LawBootstrap
    allocations: tuple[Allocation, ...]
    level: float

    def to_dict(self) -> dict[str, object]:
        return {
            "law": "L(N, D) = E + A / N^alpha + B / D^beta",
            "estimates": {k: v.to_dict() for k, v in self.estimates.items()},
            "objective_huber_sum": self.model.objective_,
            "huber_delta": self.model.huber_delta,
            "n_starts": self.model.n_starts_,
            "interval_level": self.level,
            "bootstrap": {
                "resamples": self.bootstrap.n_resamples,
                "failed": self.bootstrap.n_failed,
                "failures": self.bootstrap.failures,
                "unconverged": self.bootstrap.n_unconverged,
                "seed": self.bootstrap.seed,
                "unit": "run (cell)",
            },
            "compute_optimal": [a.to_dict() for a in self.allocations],
        }


@dataclass
class Analysis:
    """The results; ``data`` holds the cells as fitted (one learning rate per (N, D), C the
    chosen compute, D effective data where corrected, ``tokens`` the tokens seen)."""

    data: FitData
    settings: Settings
    compute: ComputeChoice
    repetition: Repetition
    lr_choices: tuple[LrChoice, ...] = ()
    checks: list[Check] = field(default_factory=list)
    parametric: ParametricResult | None = None
    isoflop: IsoflopResult | None = None
    envelope: EnvelopeResult | None = None
    power_laws: list[SaturatingFit] = field(default_factory=list)
    extrapolation: ExtrapolationResult | None = None
    skipped: dict[str, str] = field(default_factory=dict)


def prediction_computes(data: FitData, settings: Settings) -> np.ndarray:
    if settings.predict_compute:
        return np.array(settings.predict_compute, dtype=float)
    return float(data.cells["C"].max()) * np.array([1.0, 10.0, 100.0])


def fit_parametric(data: FitData, settings: Settings, compute: ComputeModel) -> ParametricResult:
    """Full-data fit, bootstrap over cells, and compute-optimal allocation with intervals."""
    cells = data.cells
    N, D, loss = (cells[k].to_numpy() for k in ("N", "D", "loss"))
    model = ChinchillaLaw(huber_delta=settings.huber_delta, init_grid=settings.init_grid)
    try:
        model.fit(N, D, loss)
    except FitInputError as err:
        raise FitInputError(f"{data.origin}: {err}") from err
    boot = bootstrap_law(
        model, N, D, loss, settings.n_bootstrap, settings.seed, settings.n_perturbed
    )
    params = theta_to_params(model.theta_)
    point, samples = derived(params), derived(boot.params)
    estimates = {k: summarise(float(point[k]), samples[k], settings.level) for k in point}
    computes = prediction_computes(data, settings)
    best = compute_optimal(params, computes, compute)
    spread = compute_optimal(boot.params, computes, compute)
    allocations = tuple(
        Allocation(
            compute=float(c),
            **{
                k: summarise(float(best[k][i]), spread[k][:, i], settings.level)
                for k in ("N_opt", "D_opt", "loss")
            },
        )
        for i, c in enumerate(computes)
    )
    return ParametricResult(model, estimates, boot, allocations, settings.level)


def _kept(result: Analysis, name: str, outcome: T | str) -> T | None:
    """The method's result, or None after recording why it was skipped."""
    if isinstance(outcome, str):
        result.skipped[name] = outcome
        return None
    return outcome


def analyse(data: FitData, settings: Settings) -> Analysis:
    """Prepare the cells, run every selected method the data allow (recording why the others
    were skipped), then check the result.

    A degenerate law overflows (A = exp(200), G = inf): numpy's floating-point warnings are
    silenced here because the checks report such a fit, once and in words.
    """
    with np.errstate(over="ignore", divide="ignore", invalid="ignore", under="ignore"):
        return _analyse(data, settings)


def _analyse(data: FitData, settings: Settings) -> Analysis:
    prepared = prepare(data, settings.group_tol, settings.compute, settings.data_constrained)
    data, model = prepared.data, prepared.compute.model
    result = Analysis(
        data=data,
        settings=settings,
        compute=prepared.compute,
        repetition=prepared.repetition,
        lr_choices=prepared.lr_choices,
    )
    methods, cells = settings.methods, data.cells
    if "parametric" in methods:
        result.parametric = fit_parametric(data, settings, model)
    if "isoflop" in methods:
        outcome = isoflop(
            cells, settings.group_tol, settings.n_bootstrap, settings.seed, settings.level, model
        )
        result.isoflop = _kept(result, "isoflop", outcome)
    if "envelope" in methods:
        curves = list(data.curves)
        outcome = (
            envelope(curves, compute=model) if curves else "needs val/loss histories (MLflow input)"
        )
        result.envelope = _kept(result, "envelope", outcome)
    if "power-law" in methods:
        for variable, held in (("N", "D"), ("D", "N")):
            fit = slice_fit(cells, variable, held, settings.group_tol, settings.huber_delta)
            if (kept := _kept(result, f"power-law L({variable})", fit)) is not None:
                result.power_laws.append(kept)
    if "extrapolation" in methods:
        law = ChinchillaLaw(huber_delta=settings.huber_delta, init_grid=settings.init_grid)
        outcome = extrapolation_check(law, cells, settings.holdout_fraction)
        result.extrapolation = _kept(result, "extrapolation", outcome)
    result.checks = run_checks(result)
    return result
