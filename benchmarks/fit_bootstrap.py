"""Time the parametric scaling-law fit and its bootstrap on synthetic runs from a known law, and
the whole analysis (every method, as `python -m astropt.fit_scaling` runs it) of a 9-cell sweep.

    python benchmarks/fit_bootstrap.py [--points 250] [--resamples 1000] [--init-grid full]

Writes benchmarks/results/fit_bootstrap.json and prints it.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import scipy

from astropt.fit_scaling import BESIROGLU_GRID, COARSE_GRID, ChinchillaLaw, Settings, analyse
from astropt.fit_scaling.bootstrap import bootstrap_law
from astropt.fit_scaling.sources import FitData, cells_frame

# Hoffmann et al. 2022's Approach 3 estimates, as the known law.
TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
RESULT = Path(__file__).parent / "results" / "fit_bootstrap.json"


def synthetic_runs(n_points: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-uniform N in [1e7, 1e10] and D in [1e9, 1e12], 1 % log-normal noise on the loss."""
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n_points))
    D = np.exp(rng.uniform(np.log(1e9), np.log(1e12), n_points))
    loss = TRUE["E"] + TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]
    return N, D, loss * np.exp(rng.normal(0.0, 0.01, n_points))


def nine_cells(seed: int) -> FitData:
    """3 sizes x 3 FLOP budgets, the shape of the default sweep, 1 % noise on the loss."""
    rng = np.random.default_rng(seed)
    N, C = (a.ravel() for a in np.meshgrid((1e7, 4e7, 1.6e8), (1e18, 4e18, 1.6e19)))
    D = C / (6 * N)
    loss = TRUE["E"] + TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]
    noisy = loss * np.exp(rng.normal(0.0, 0.01, N.size))
    return FitData("9 cells", cells_frame([f"c{i}" for i in range(N.size)], N, D, noisy))


def time_analysis(data: FitData, settings: Settings) -> dict[str, float]:
    start, cpu_start = time.perf_counter(), time.process_time()
    analyse(data, settings)
    return {
        "seconds": round(time.perf_counter() - start, 3),
        "cpu_seconds": round(time.process_time() - cpu_start, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=250)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--init-grid", choices=("full", "coarse"), default="full")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    N, D, loss = synthetic_runs(args.points, args.seed)
    grid = BESIROGLU_GRID if args.init_grid == "full" else COARSE_GRID
    load_before = os.getloadavg()
    start, cpu_start = time.perf_counter(), time.process_time()
    model = ChinchillaLaw(init_grid=grid).fit(N, D, loss)
    fitted, cpu_fitted = time.perf_counter(), time.process_time()
    boot = bootstrap_law(model, N, D, loss, args.resamples, seed=args.seed)
    done, cpu_done = time.perf_counter(), time.process_time()

    lo, hi = np.percentile(boot.params, [2.5, 97.5], axis=0)
    settings = Settings(n_bootstrap=args.resamples, seed=args.seed, init_grid=grid)
    analysis_9 = time_analysis(nine_cells(args.seed), settings)
    result = {
        "benchmark": "parametric fit + bootstrap over runs",
        "points": args.points,
        "resamples": args.resamples,
        "failed_resamples": boot.failures,
        "init_grid_starts": model.n_starts_,
        "fit_seconds": round(fitted - start, 3),
        "bootstrap_seconds": round(done - fitted, 3),
        "bootstrap_ms_per_resample": round(1e3 * (done - fitted) / args.resamples, 3),
        "total_seconds": round(done - start, 3),
        # CPU time of this process: the machine is shared, so wall time includes waiting.
        "fit_cpu_seconds": round(cpu_fitted - cpu_start, 3),
        "bootstrap_cpu_seconds": round(cpu_done - cpu_fitted, 3),
        "analysis_9_cells": analysis_9,
        "true": TRUE,
        "fitted": model.params_,
        "interval_95": {k: [lo[i], hi[i]] for i, k in enumerate(TRUE)},
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "processor": platform.processor() or platform.machine(),
        },
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    RESULT.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
