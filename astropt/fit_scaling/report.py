"""The analysis as one JSON-ready document and as a readable text report."""

import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from astropt.fit_scaling.analysis import Analysis
from astropt.fit_scaling.bootstrap import Estimate
from astropt.fit_scaling.checks import ERROR, WARNING


def _jsonable(value: object) -> object:
    """Plain Python values, with NaN/inf as null (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_dict(analysis: Analysis, files: Sequence[Path] = ()) -> dict[str, object]:
    """Everything the report says, with full-precision numbers; ``checks`` first, ``files`` the
    files written with --out."""
    data, settings = analysis.data, analysis.settings
    sections = {
        "parametric": analysis.parametric,
        "isoflop": analysis.isoflop,
        "envelope": analysis.envelope,
        "extrapolation": analysis.extrapolation,
    }
    document = {
        "checks": [check.to_dict() for check in analysis.checks],
        "source": data.origin,
        "mlflow": None if data.mlflow is None else asdict(data.mlflow),
        "settings": {
            **asdict(settings),
            "init_grid": {k: list(v) for k, v in settings.init_grid.items()},
        },
        "compute": analysis.compute.to_dict(),
        "data_repetition": analysis.repetition.to_dict(),
        "lr_selection": [choice.to_dict() for choice in analysis.lr_choices],
        "cells": {
            "used": data.cells.to_dict(orient="records"),
            "excluded": [asdict(e) for e in data.excluded],
        },
        **{name: None if part is None else part.to_dict() for name, part in sections.items()},
        "power_laws": [fit.to_dict() for fit in analysis.power_laws],
        "skipped": analysis.skipped,
        "files": [str(path) for path in files],
    }
    return _jsonable(document)  # type: ignore[return-value]


def _g(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _estimate(est: Estimate, digits: int = 4) -> str:
    """value [lo, hi] (se ...)."""
    text = _g(est.value, digits)
    if est.lo is not None:
        text += f"  [{_g(est.lo)}, {_g(est.hi)}]"
    if est.se is not None:
        text += f"  se {_g(est.se, 3)}"
    return text


def _parametric_lines(analysis: Analysis) -> list[str]:
    part = analysis.parametric
    if part is None:
        return []
    boot, pct = part.bootstrap, f"{100 * part.level:g}%"
    lines = [
        "Parametric fit (Approach 3): L(N, D) = E + A / N^alpha + B / D^beta",
        f"  Huber delta {part.model.huber_delta:g} on log L, summed; L-BFGS from "
        f"{part.model.n_starts_} starts; objective {part.model.objective_:.4g}",
        f"  bootstrap over cells: {boot.n_resamples} resamples (seed {boot.seed}, "
        f"{boot.n_failed} failed, {boot.n_unconverged} not converged); {pct} percentile "
        "intervals",
    ]
    lines += [f"    {count} failed: {reason}" for reason, count in boot.failures.items()]
    labels = {"a": "a = beta/(alpha+beta)", "b": "b = alpha/(alpha+beta)", "G": "G"}
    for name, est in part.estimates.items():
        lines.append(f"  {labels.get(name, name):<24}{_estimate(est)}")
    model = analysis.compute.model
    how = (
        "N_opt = G (C/6)^a, D_opt = (C/6)^b / G"
        if model.excess_coef == 0.0
        else "L minimised along the budget numerically"
    )
    lines.append(f"Compute-optimal allocation ({model.formula}; {how})")
    for alloc in part.allocations:
        lines += [
            f"  C = {alloc.compute:.4g} FLOP",
            f"    N_opt = {_estimate(alloc.N_opt)}",
            f"    D_opt = {_estimate(alloc.D_opt)}",
            f"    loss  = {_estimate(alloc.loss)}",
        ]
    return lines


def _isoflop_lines(analysis: Analysis) -> list[str]:
    part = analysis.isoflop
    if part is None:
        return []
    lines = [
        f"IsoFLOP (Approach 2): N_opt ~ C^a, a = {_estimate(part.exponent)} (bootstrap over "
        f"cells within budgets, {part.n_resamples} resamples, {part.n_failed} failed); "
        f"least-squares se {_g(part.frontier.slope.se, 3)}; b = 1 - a = "
        f"{_g(1 - part.exponent.value)}"
    ]
    for p in part.parabolas:
        lines.append(
            f"  budget {p.budget:.3g}: N* = {p.N_opt:.4g}, D* = {p.D_opt:.4g}, "
            f"loss {p.loss_opt:.4g} ({len(p.cells)} cells)"
        )
    lines += [f"  budget {b:.3g} not used: {reason}" for b, reason in part.skipped]
    return lines


def _other_lines(analysis: Analysis) -> list[str]:
    lines = []
    if (env := analysis.envelope) is not None:
        lines.append(
            f"Envelope (Approach 1): N_opt ~ C^a, a = {_g(env.frontier.slope.value)} "
            f"(least-squares se {_g(env.frontier.slope.se, 3)}; optimistic, points are "
            f"correlated) over {env.compute.size} compute values reached by "
            f"{len(set(env.cells))} run(s)"
        )
    for fit in analysis.power_laws:
        coef, exponent = fit.names
        lines.append(
            f"Power law {fit.law} at {fit.held} ~ {fit.held_at:.4g} ({len(fit.cells)} cells): "
            f"E = {fit.E:.4g}, {coef} = {fit.coef:.4g}, {exponent} = {fit.exponent:.4g}"
        )
    if (ext := analysis.extrapolation) is not None:
        lines.append(
            f"Extrapolation check: refit on {ext.n_train} cells without the top "
            f"{100 * ext.fraction:g}% by compute; relative error on the {len(ext.held_out)} "
            f"held-out cell(s): mean |err| {100 * ext.mean_abs_rel_error:.3g}%, max "
            f"{100 * ext.max_abs_rel_error:.3g}%"
        )
        for row in ext.held_out.itertuples():
            lines.append(
                f"  {row.cell}: C = {row.C:.4g}, loss {row.loss:.4g}, predicted "
                f"{row.predicted:.4g} ({100 * row.rel_error:+.3g}%)"
            )
    lines += [f"Skipped {name}: {reason}" for name, reason in analysis.skipped.items()]
    return lines


def _check_lines(analysis: Analysis) -> list[str]:
    checks = analysis.checks
    if not checks:
        return [
            "Checks: all passed (exponents, magnitudes, start grid, agreement of approaches, "
            "bootstrap, coverage of N and D, learning rates, repeated data)"
        ]
    errors = sum(c.level == ERROR for c in checks)
    warnings = sum(c.level == WARNING for c in checks)
    head = f"Checks: {errors} error(s), {warnings} warning(s)"
    if errors:
        head += " - the parametric law is not usable as it stands; do not quote its numbers"
    return [head] + [f"  {c.level.upper()} [{c.code}] {c.message}" for c in checks]


def _setup_lines(analysis: Analysis) -> list[str]:
    """What the cells are: compute counted how, repeated data, learning rates chosen."""
    choice = analysis.compute
    lines = [
        f"Compute: {choice.used} ({choice.model.formula}); {choice.note}",
        f"Repeated data: {analysis.repetition.summary}",
    ]
    if analysis.lr_choices:
        axis = analysis.lr_choices[0].axis
        lines.append(f"Learning rate: the lowest-loss {axis} of each (N, D) is used")
        lines += [
            f"  N = {c.N:<10.4g} D = {c.D:<10.4g} {axis} {c.best:g} of {list(c.tried)}"
            f"{'  (edge)' if c.at_edge else ''}: {c.cell}, loss {c.loss:.4g}"
            for c in analysis.lr_choices
        ]
    return lines


def _cell_lines(analysis: Analysis) -> list[str]:
    data = analysis.data
    corrected = analysis.repetition.applied
    lines = [f"Cells used ({len(data.cells)}):"]
    for row in data.cells.itertuples():
        effective = f" (D' = {row.D:.4g})" if corrected and row.tokens != row.D else ""
        lines.append(
            f"  {row.cell:<24} N = {row.N:<11.4g} D = {row.tokens:<11.4g} C = {row.C:<11.4g} "
            f"loss = {row.loss:.4g}{effective}"
        )
    lines.append(f"Cells excluded ({len(data.excluded)}):")
    for ex in data.excluded:
        run = f" (run {ex.run_id})" if ex.run_id else ""
        lines.append(f"  {ex.cell}{run}: {ex.reason}")
    return lines


def to_text(analysis: Analysis, files: Sequence[Path] = ()) -> str:
    """The readable terminal report: checks first, numbers to 4 significant digits."""
    header = [f"Scaling-law fit of {analysis.data.origin}"]
    written = [f"Files written ({len(files)}):"] + [f"  {path}" for path in files] if files else []
    sections = (
        _check_lines(analysis),
        _setup_lines(analysis),
        _parametric_lines(analysis),
        _isoflop_lines(analysis),
        _other_lines(analysis),
        _cell_lines(analysis),
        written,
    )
    return "\n\n".join("\n".join(s) for s in (header, *sections) if s) + "\n"
