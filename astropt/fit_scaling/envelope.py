"""Training-curve envelope (Hoffmann et al. 2022, "Approach 1").

Every logged validation point of a run is placed at compute C = tokens_seen x FLOPs per token of
its size (6 N, or with the attention term: compute.ComputeModel). Each run's curve
is interpolated (linearly in ln C) at log-spaced compute values spanning all runs; at each value
the lowest loss over the runs covering it is the envelope, and the run reaching it gives the
loss-optimal N at that compute. N_opt = k C^a is then fitted through those points by least
squares in log-log space; neighbouring envelope points are strongly correlated, so the
least-squares standard error understates the uncertainty of a.
"""

from dataclasses import dataclass

import numpy as np

from astropt.fit_scaling.compute import ComputeModel
from astropt.fit_scaling.power_law import LogLogFit, loglog_fit


@dataclass(frozen=True)
class Curve:
    """One run's validation curve from its first evaluation after step 0 (tokens > 0:
    `astropt.record.validation_curve`)."""

    cell: str
    N: float
    tokens: np.ndarray
    loss: np.ndarray


@dataclass(frozen=True)
class EnvelopeResult:
    compute: np.ndarray
    loss: np.ndarray
    cells: tuple[str, ...]
    N: np.ndarray
    frontier: LogLogFit

    def to_dict(self) -> dict[str, object]:
        return {
            "a": self.frontier.slope.to_dict(),
            "N_opt_prefactor": float(np.exp(self.frontier.intercept)),
            "points": [
                {"compute": float(c), "loss": float(v), "cell": cell, "N": float(n)}
                for c, v, cell, n in zip(self.compute, self.loss, self.cells, self.N, strict=True)
            ],
        }


def _interpolated(curve: Curve, log_grid: np.ndarray, compute: ComputeModel) -> np.ndarray:
    """The curve's loss at the grid (NaN outside the compute range it covers)."""
    keep = np.isfinite(curve.loss)
    log_c = np.log(compute.flops_per_token(curve.N) * curve.tokens[keep])
    order = np.argsort(log_c)
    if order.size == 0:
        return np.full(log_grid.size, np.nan)
    return np.interp(log_grid, log_c[order], curve.loss[keep][order], left=np.nan, right=np.nan)


def envelope(
    curves: list[Curve], n_points: int = 50, compute: ComputeModel | None = None
) -> EnvelopeResult | str:
    """The lower envelope and N_opt(C) through it, or why it cannot be computed."""
    compute = compute or ComputeModel()
    computes = [compute.flops_per_token(c.N) * c.tokens for c in curves]
    if not curves or not any(c.size for c in computes):
        return "no val/loss history"
    every = np.concatenate(computes)
    log_grid = np.linspace(np.log(every.min()), np.log(every.max()), n_points)
    table = np.stack([_interpolated(c, log_grid, compute) for c in curves])
    covered = np.isfinite(table).any(axis=0)
    table, log_grid = table[:, covered], log_grid[covered]
    best = np.nanargmin(table, axis=0)
    sizes = np.array([curves[i].N for i in best])
    if np.unique(sizes).size < 2:
        return "the envelope is reached by a single model size"
    compute = np.exp(log_grid)
    return EnvelopeResult(
        compute=compute,
        loss=table[best, np.arange(best.size)],
        cells=tuple(curves[i].cell for i in best),
        N=sizes,
        frontier=loglog_fit(compute, sizes),
    )
