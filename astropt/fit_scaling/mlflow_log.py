"""Logging a fit as an MLflow run (role fit) nested under the sweep's parent run, and copying its
headline numbers onto the parent. Run handling and the record's names come from astropt.record;
the fit's own metric names from astropt.record."""

import dataclasses
import math
from pathlib import Path

from mlflow.tracking import MlflowClient

from astropt.fit_scaling.analysis import Analysis
from astropt.fit_scaling.bootstrap import Estimate
from astropt.fit_scaling.checks import ERROR, WARNING
from astropt.record import (
    ESTIMATE_SUFFIXES,
    FIT_RUN_NAME,
    FitMetric,
    FitParam,
    FitTag,
    MetricBuffer,
    Role,
    Status,
    Tag,
    allocation_metric,
    close_run,
    law_metric,
    log_params,
    make_client,
    power_law_metric,
    set_tags,
)

# The parametric estimates copied onto the sweep's parent run.
HEADLINE_ESTIMATES = ("E", "A", "B", "alpha", "beta", "a")


def _put(metrics: dict[str, float], key: str, est: Estimate) -> None:
    """The estimate and, where known, its se and interval as key, key_se, key_lo, key_hi."""
    metrics[key] = est.value
    for suffix in ESTIMATE_SUFFIXES:
        if (value := getattr(est, suffix)) is not None:
            metrics[f"{key}_{suffix}"] = value


def headline_metrics(analysis: Analysis) -> dict[str, float]:
    """What the sweep's parent shows of the fit: the law's parameters and a with their
    intervals, the IsoFLOP and envelope a, the extrapolation error and the check counts."""
    metrics: dict[str, float] = {}
    if (part := analysis.parametric) is not None:
        for name in HEADLINE_ESTIMATES:
            _put(metrics, law_metric(name), part.estimates[name])
    if analysis.isoflop is not None:
        _put(metrics, FitMetric.ISOFLOP_A, analysis.isoflop.exponent)
    if analysis.envelope is not None:
        _put(metrics, FitMetric.ENVELOPE_A, analysis.envelope.frontier.slope)
    if (ext := analysis.extrapolation) is not None:
        metrics[FitMetric.EXTRAPOLATION_MEAN] = ext.mean_abs_rel_error
        metrics[FitMetric.EXTRAPOLATION_MAX] = ext.max_abs_rel_error
    metrics[FitMetric.CHECK_ERRORS] = sum(c.level == ERROR for c in analysis.checks)
    metrics[FitMetric.CHECK_WARNINGS] = sum(c.level == WARNING for c in analysis.checks)
    return metrics


def checks_tag(analysis: Analysis) -> str:
    """ "ok", or the counts of errors and warnings."""
    errors = sum(c.level == ERROR for c in analysis.checks)
    warnings = len(analysis.checks) - errors
    return f"{errors} error(s), {warnings} warning(s)" if analysis.checks else "ok"


def fit_metrics(analysis: Analysis) -> dict[str, float]:
    """The headline plus every estimate, allocation and single-variable law, as flat metrics."""
    metrics = headline_metrics(analysis)
    if (part := analysis.parametric) is not None:
        for name, est in part.estimates.items():
            _put(metrics, law_metric(name), est)
        for alloc in part.allocations:
            for quantity in ("N_opt", "D_opt", "loss"):
                key = allocation_metric(alloc.compute, quantity)
                _put(metrics, key, getattr(alloc, quantity))
    for fit in analysis.power_laws:
        coef, exponent = fit.names
        metrics[power_law_metric(fit.variable, "E")] = fit.E
        metrics[power_law_metric(fit.variable, coef)] = fit.coef
        metrics[power_law_metric(fit.variable, exponent)] = fit.exponent
    return metrics


def _params(analysis: Analysis) -> dict[str, object]:
    settings, data = analysis.settings, analysis.data
    fields = dataclasses.asdict(settings)
    for replaced in ("init_grid", FitParam.COMPUTE, FitParam.DATA_CONSTRAINED):
        fields.pop(replaced)
    fields["methods"] = ",".join(settings.methods)
    fields["predict_compute"] = ",".join(f"{c:g}" for c in settings.predict_compute)
    return {
        **fields,
        FitParam.N_CELLS: len(data.cells),
        FitParam.N_EXCLUDED: len(data.excluded),
        FitParam.INIT_GRID_STARTS: (
            analysis.parametric.model.n_starts_
            if analysis.parametric is not None
            else math.prod(len(v) for v in settings.init_grid.values())
        ),
        FitParam.COMPUTE: analysis.compute.used,
        FitParam.DATA_CONSTRAINED: analysis.repetition.applied,
    }


def _log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float]) -> None:
    buffer = MetricBuffer(client, run_id)
    buffer.add(0, {str(k): v for k, v in metrics.items() if math.isfinite(v)})
    if not buffer.flush():
        raise ConnectionError(f"could not write the fit's metrics to MLflow run {run_id}")


def log_fit_run(analysis: Analysis, artifacts: list[Path]) -> str:
    """Log params, metrics and the ``artifacts`` files as a new run named ``fit`` with role
    fit, nested under the sweep's parent run, whose headline metrics it also sets; returns the
    fit run's id."""
    origin = analysis.data.mlflow
    if origin is None:
        raise ValueError("the analysis did not come from MLflow")
    client = make_client(origin.tracking_uri)
    tags = {Tag.ROLE: Role.FIT, Tag.STATUS: Status.RUNNING, FitTag.FIT_CHECKS: checks_tag(analysis)}
    if origin.parent_run_id:
        tags[Tag.PARENT] = origin.parent_run_id
    run = client.create_run(
        origin.experiment_id, run_name=FIT_RUN_NAME, tags={str(k): str(v) for k, v in tags.items()}
    )
    run_id = run.info.run_id
    log_params(client, run_id, _params(analysis))
    _log_metrics(client, run_id, fit_metrics(analysis))
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    close_run(client, run_id, Status.FINISHED)
    if origin.parent_run_id:
        _log_metrics(client, origin.parent_run_id, headline_metrics(analysis))
        parent_tags = {FitTag.FIT_RUN: run_id, FitTag.FIT_CHECKS: checks_tag(analysis)}
        set_tags(client, origin.parent_run_id, parent_tags)
    return run_id
