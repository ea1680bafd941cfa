"""How tightly would a grid pin the law? Simulated fits of a grid's cells, before running it.

    python benchmarks/grid_design.py GRID.yaml [GRID.yaml ...] --law fit/report.json --noise 0.005

For each grid and each repeat: losses drawn from a known law L = E + A/N^alpha + B/D'^beta at the
grid's cells (N, and D' the effective data of the planned tokens and epochs, as fit_scaling
corrects repeated data), each times (1 + noise x a standard normal); then fit_scaling's own
parametric fit and bootstrap over cells. Prints the median width of alpha's and beta's 95%
interval over the repeats, so a grid's power to pin the exponents is known before its compute
is spent. The law comes from an earlier fit's report.json (`--law`) or from `--params`;
`--noise` is the cells' relative scatter about the law (a fit's residuals, or the spread
between seeds). Results: benchmarks/results/grid_design.json (or `--out`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from astropt.fit_scaling.bootstrap import bootstrap_law
from astropt.fit_scaling.parametric import ChinchillaLaw
from astropt.fit_scaling.repetition import effective_data
from astropt.record import Role
from astropt.sweep.cells import expand
from astropt.sweep.grid import load_grid
from astropt.sweep.run import grid_facts

LAW_KEYS = ("E", "A", "B", "alpha", "beta")
RESULTS = Path(__file__).parent / "results" / "grid_design.json"


def grid_cells(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, D') of the grid's cells (a branching grid's trunks are not cells)."""
    grid = load_grid(path)
    cells = [c for c in expand(grid, grid_facts(grid)) if c.role == Role.CELL]
    n = np.array([c.plan.n_params for c in cells], dtype=float)
    tokens = np.array([c.plan.tokens_seen for c in cells], dtype=float)
    # no data facts (unique tokens unknown): treated as never repeated
    unique = np.array([c.plan.unique_tokens or np.inf for c in cells], dtype=float)
    return n, effective_data(tokens, tokens / unique)


def interval_widths(
    law: dict[str, float], n: np.ndarray, d: np.ndarray, noise: float, seed: int, resamples: int
) -> tuple[float, float]:
    """alpha's and beta's 95% bootstrap interval widths for one draw of noisy losses."""
    rng = np.random.default_rng(seed)
    exact = law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"]
    loss = exact * (1.0 + noise * rng.standard_normal(n.size))
    model = ChinchillaLaw().fit(n, d, loss)
    boot = bootstrap_law(model, n, d, loss, n_resamples=resamples, seed=seed)
    lo, hi = np.percentile(boot.params[:, 3:5], [2.5, 97.5], axis=0)
    return float(hi[0] - lo[0]), float(hi[1] - lo[1])


def read_law(args: argparse.Namespace) -> dict[str, float]:
    if args.params:
        return dict(zip(LAW_KEYS, args.params, strict=True))
    estimates = json.loads(args.law.read_text())["parametric"]["estimates"]
    return {k: float(estimates[k]["value"]) for k in LAW_KEYS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grids", nargs="+", type=Path, metavar="GRID.yaml")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--law", type=Path, metavar="REPORT.json", help="a fit's report.json")
    source.add_argument("--params", type=float, nargs=5, metavar=LAW_KEYS)
    parser.add_argument("--noise", type=float, default=0.005, help="relative scatter (0.005)")
    parser.add_argument("--repeats", type=int, default=5, help="noise draws per grid (5)")
    parser.add_argument("--bootstrap", type=int, default=400, help="resamples per fit (400)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    law = read_law(args)
    print(f"law {law}, noise {args.noise:.2%}, {args.repeats} draws x {args.bootstrap} resamples")
    rows = []
    for path in args.grids:
        n, d = grid_cells(path)
        widths = np.array(
            [interval_widths(law, n, d, args.noise, s, args.bootstrap) for s in range(args.repeats)]
        )
        alpha, beta = np.median(widths, axis=0)
        rows.append({"grid": str(path), "cells": int(n.size), "N_min": n.min(), "N_max": n.max(),
                     "alpha_width": alpha, "beta_width": beta})  # fmt: skip
        print(
            f"{path}: {n.size} cells, N {n.min():.3g}-{n.max():.3g}, "
            f"median 95% interval width alpha {alpha:.3f}, beta {beta:.3f}"
        )
    settings = vars(args) | {"law": law, "grids": [str(g) for g in args.grids], "out": None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(settings | {"results": rows}, indent=2, default=str))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
