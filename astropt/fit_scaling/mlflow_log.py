"""Logging a fit as an MLflow run nested under the sweep's parent run (docs/CONTRACTS.md)."""

import math
from pathlib import Path

import mlflow

from astropt.fit_scaling.analysis import Analysis
from astropt.fit_scaling.bootstrap import Estimate

FIT_TAGS = {"astropt.role": "fit"}


def _put(metrics: dict[str, float], key: str, est: Estimate) -> None:
    """The estimate and, where known, its se and interval as key, key_se, key_lo, key_hi."""
    metrics[key] = est.value
    for suffix, value in (("se", est.se), ("lo", est.lo), ("hi", est.hi)):
        if value is not None:
            metrics[f"{key}_{suffix}"] = value


def headline_metrics(analysis: Analysis) -> dict[str, float]:
    """Parameters, exponents, allocations and extrapolation errors as flat MLflow metrics."""
    metrics: dict[str, float] = {}
    if (part := analysis.parametric) is not None:
        for name, est in part.estimates.items():
            _put(metrics, f"fit/{name}", est)
        for alloc in part.allocations:
            tag = f"{alloc.compute:.3g}".replace("+", "")  # metric names may not contain '+'
            _put(metrics, f"optimal_{tag}/N_opt", alloc.N_opt)
            _put(metrics, f"optimal_{tag}/D_opt", alloc.D_opt)
            _put(metrics, f"optimal_{tag}/loss", alloc.loss)
    if analysis.isoflop is not None:
        _put(metrics, "isoflop/a", analysis.isoflop.exponent)
    if analysis.envelope is not None:
        _put(metrics, "envelope/a", analysis.envelope.frontier.slope)
    for fit in analysis.power_laws:
        coef, exponent = fit.names
        prefix = f"power_law_{fit.variable}"
        metrics[f"{prefix}/E"] = fit.E
        metrics[f"{prefix}/{coef}"] = fit.coef
        metrics[f"{prefix}/{exponent}"] = fit.exponent
    if (ext := analysis.extrapolation) is not None:
        metrics["extrapolation/mean_abs_rel_error"] = ext.mean_abs_rel_error
        metrics["extrapolation/max_abs_rel_error"] = ext.max_abs_rel_error
    return metrics


def _params(analysis: Analysis) -> dict[str, object]:
    settings, data = analysis.settings, analysis.data
    return {
        "methods": ",".join(settings.methods),
        "n_cells": len(data.cells),
        "n_excluded": len(data.excluded),
        "bootstrap_resamples": settings.n_bootstrap,
        "seed": settings.seed,
        "interval_level": settings.level,
        "huber_delta": settings.huber_delta,
        "init_grid_starts": math.prod(len(v) for v in settings.init_grid.values()),
        "holdout_fraction": settings.holdout_fraction,
        "group_tol": settings.group_tol,
    }


def log_fit_run(analysis: Analysis, artifacts: list[Path]) -> str:
    """Log params, headline metrics and the ``artifacts`` files as a run named ``fit`` tagged
    astropt.role=fit, nested under the sweep's parent run; returns its run id."""
    origin = analysis.data.mlflow
    if origin is None:
        raise ValueError("the analysis did not come from MLflow")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(origin.tracking_uri)
    try:
        with mlflow.start_run(
            experiment_id=origin.experiment_id,
            parent_run_id=origin.parent_run_id,
            run_name="fit",
            tags=FIT_TAGS,
        ) as run:
            mlflow.log_params(_params(analysis))
            mlflow.log_metrics(headline_metrics(analysis))
            for path in artifacts:
                mlflow.log_artifact(str(path))
            return run.info.run_id
    finally:
        mlflow.set_tracking_uri(previous)
