"""PNG plots of the analysis, drawn on matplotlib's Agg canvas (no display, no pyplot state)."""

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from astropt.fit_scaling.allocation import compute_optimal
from astropt.fit_scaling.analysis import Analysis, ParametricResult, prediction_computes
from astropt.fit_scaling.isoflop import IsoflopResult
from astropt.fit_scaling.parametric import theta_to_params


def _figure(n_axes: int) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(6.0 * n_axes, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, n_axes, i + 1) for i in range(n_axes)]


def _size_colours(sizes: np.ndarray) -> ScalarMappable:
    """Colour by model size on a log scale."""
    low, high = float(sizes.min()), float(sizes.max())
    return ScalarMappable(norm=LogNorm(vmin=low, vmax=max(high, 1.01 * low)), cmap="viridis")


def loss_vs_compute(analysis: Analysis, path: Path) -> None:
    """Final loss of each cell against compute, one colour per model size, with validation
    curves (MLflow input), the fitted law along each size and the envelope."""
    cells = analysis.data.cells
    fig, (ax,) = _figure(1)
    colours = _size_colours(cells["N"].to_numpy())
    compute = analysis.compute.model
    for curve in analysis.data.curves:
        c = compute.flops_per_token(curve.N) * curve.tokens
        ax.plot(c, curve.loss, color=colours.to_rgba(curve.N), alpha=0.3, lw=0.8)
    for n, group in cells.groupby("N"):
        colour = colours.to_rgba(n)
        ax.scatter(group["C"], group["loss"], color=colour, s=18, zorder=3)
        if analysis.parametric is not None:
            c = np.geomspace(group["C"].min() / 3.0, group["C"].max() * 3.0, 100)
            law = analysis.parametric.model.predict(n, compute.tokens(n, c))
            ax.plot(c, law, color=colour, lw=1)
    if analysis.envelope is not None:
        ax.plot(analysis.envelope.compute, analysis.envelope.loss, "k--", lw=1, label="envelope")
        ax.legend()
    fig.colorbar(colours, ax=ax, label="N (parameters)")
    ax.set(
        xscale="log", yscale="log", xlabel=f"compute, {compute.expression} (FLOP)", ylabel="loss"
    )
    ax.set_title("Loss vs compute per model size (lines: fitted law)")
    fig.savefig(path, dpi=120)


def isoflop_curves(part: IsoflopResult, cells: pd.DataFrame, path: Path) -> None:
    """Loss against N per budget with its parabola and minimum; the minima against compute."""
    fig, (left, right) = _figure(2)
    budgets = np.array([p.budget for p in part.parabolas])
    cmap = colormaps["plasma"]
    shade = LogNorm(vmin=budgets.min(), vmax=max(budgets.max(), 1.01 * budgets.min()))
    for p in part.parabolas:
        colour = cmap(0.85 * shade(p.budget))
        members = cells[cells["cell"].isin(p.cells)]
        n = np.geomspace(members["N"].min(), members["N"].max(), 100)
        left.scatter(members["N"], members["loss"], color=colour, s=14)
        left.plot(n, p.predict(n), color=colour, lw=1, label=f"{p.budget:.2g}")
        left.plot(p.N_opt, p.loss_opt, "kx")
    left.set(xscale="log", xlabel="N (parameters)", ylabel="loss", title="IsoFLOP parabolas")
    left.legend(title="budget (FLOP)", fontsize="small")
    c = np.geomspace(budgets.min(), budgets.max(), 50)
    right.scatter(budgets, [p.N_opt for p in part.parabolas], color="k", s=18)
    right.plot(c, part.frontier.predict(c), "k-", lw=1)
    right.set(xscale="log", yscale="log", xlabel="budget C (FLOP)", ylabel="N* (parameters)")
    right.set_title(f"N* ~ C^a, a = {part.exponent.value:.3f}")
    fig.savefig(path, dpi=120)


def frontier(analysis: Analysis, part: ParametricResult, path: Path) -> None:
    """N_opt(C) of the parametric law with its bootstrap band, and the other methods' optima.
    A fit with failed checks is drawn grey and dashed, without a band, its first finding in the
    title: it is not to be read as the frontier."""
    cells, level, compute = analysis.data.cells, part.level, analysis.compute.model
    fig, (ax,) = _figure(1)
    c_max = max(cells["C"].max(), prediction_computes(analysis.data, analysis.settings).max())
    c = np.geomspace(cells["C"].min(), c_max, 100)
    best = compute_optimal(theta_to_params(part.model.theta_), c, compute)["N_opt"]
    doubtful = bool(analysis.checks)
    style = "--" if doubtful else "-"
    colour = "0.5" if doubtful else "C0"
    ax.plot(c, best, style, color=colour, label="parametric fit")
    if part.bootstrap.params.shape[0] >= 2 and not doubtful:
        spread = compute_optimal(part.bootstrap.params, c, compute)["N_opt"]
        tail = 50.0 * (1.0 - level)
        lo, hi = np.percentile(spread, [tail, 100.0 - tail], axis=0)
        ax.fill_between(c, lo, hi, color="C0", alpha=0.25, label=f"bootstrap {100 * level:g}%")
    if analysis.isoflop is not None:
        minima = analysis.isoflop.parabolas
        ax.scatter(
            [p.budget for p in minima], [p.N_opt for p in minima], c="C3", label="IsoFLOP N*"
        )
    if analysis.envelope is not None:
        env = analysis.envelope
        ax.scatter(env.compute, env.N, c="C2", s=8, label="envelope")
    ax.scatter(cells["C"], cells["N"], c="0.6", s=8, label="cells")
    ax.set(xscale="log", yscale="log", xlabel="compute C (FLOP)", ylabel="N_opt (parameters)")
    if doubtful:
        first = analysis.checks[0]
        title = f"Not a reliable frontier: {len(analysis.checks)} check(s) failed\n"
        ax.set_title(title + textwrap.fill(f"{first.level}: {first.message}", 70), fontsize=9)
    else:
        ax.set_title("Compute-optimal model size")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)


def residuals(analysis: Analysis, part: ParametricResult, path: Path) -> None:
    """Relative residuals of the full fit; relative errors of the extrapolation check."""
    cells = analysis.data.cells
    fig, axes = _figure(2 if analysis.extrapolation is not None else 1)
    colours = _size_colours(cells["N"].to_numpy())
    rel = cells["loss"] / part.model.predict(cells["N"], cells["D"]) - 1.0
    axes[0].scatter(cells["C"], 100 * rel, c=colours.to_rgba(cells["N"].to_numpy()), s=14)
    axes[0].axhline(0.0, color="k", lw=0.8)
    axes[0].set(xscale="log", xlabel="compute C (FLOP)", ylabel="loss / fit - 1 (%)")
    axes[0].set_title("Residuals of the parametric fit")
    fig.colorbar(colours, ax=axes[0], label="N (parameters)")
    if analysis.extrapolation is not None:
        held = analysis.extrapolation.held_out
        axes[1].scatter(held["C"], 100 * held["rel_error"], c="C3", s=18)
        axes[1].axhline(0.0, color="k", lw=0.8)
        axes[1].set(
            xscale="log", xlabel="compute C (FLOP)", ylabel="(predicted - actual) / actual (%)"
        )
        axes[1].set_title("Extrapolation to held-out highest-compute cells")
    fig.savefig(path, dpi=120)


def write_plots(analysis: Analysis, out_dir: Path) -> list[Path]:
    """Every plot the analysis has data for, as PNG files in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "loss_vs_compute.png"]
    loss_vs_compute(analysis, written[-1])
    if analysis.isoflop is not None:
        written.append(out_dir / "isoflop.png")
        isoflop_curves(analysis.isoflop, analysis.data.cells, written[-1])
    if analysis.parametric is not None:
        written.append(out_dir / "frontier.png")
        frontier(analysis, analysis.parametric, written[-1])
        written.append(out_dir / "residuals.png")
        residuals(analysis, analysis.parametric, written[-1])
    return written
