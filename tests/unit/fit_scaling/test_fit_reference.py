"""Reproduce published fits on the Chinchilla runs (see tests/data/reference/README.md)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from astropt.fit_scaling import BESIROGLU_GRID, COARSE_GRID, ChinchillaLaw, TableColumns, load_table
from astropt.fit_scaling.bootstrap import bootstrap_law
from astropt.fit_scaling.isoflop import isoflop

REFERENCE = Path(__file__).resolve().parents[2] / "data" / "reference"

# Besiroglu et al. 2024 (arXiv:2404.10102), Table 1, on the 240 kept points.
PUBLISHED = {"E": 1.82, "A": 482.0, "B": 2085.0, "alpha": 0.35, "beta": 0.37}
# alpha and beta: the published bootstrap standard errors. E: one published se (0.03). A and B
# have published se of ~125 and ~1300; we ask for much more, 5 % of the value.
TOLERANCE = {"E": 0.03, "A": 0.05 * 482.0, "B": 0.05 * 2085.0, "alpha": 0.015, "beta": 0.02}


def chinchilla_runs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Figure 4 runs without the 5 highest-loss rows, as Besiroglu et al. do."""
    frame = pd.read_csv(REFERENCE / "chinchilla_fig4_epoch_extracted.csv")
    frame = frame.sort_values("loss", kind="stable").iloc[:-5]
    N = frame["Model Size"].to_numpy()
    return N, frame["Training FLOP"].to_numpy() / (6 * N), frame["loss"].to_numpy()


def check_against_published(model: ChinchillaLaw) -> None:
    fitted = model.params_
    print("fitted:", fitted, "published:", PUBLISHED)
    for name, published in PUBLISHED.items():
        assert abs(fitted[name] - published) <= TOLERANCE[name], name


def test_chinchilla_fit_coarse_grid() -> None:
    """The quick 243-start grid reaches the same optimum as the full grid (test below)."""
    N, D, loss = chinchilla_runs()
    assert N.size == 240
    check_against_published(ChinchillaLaw(init_grid=COARSE_GRID).fit(N, D, loss))


@pytest.mark.slow
def test_chinchilla_fit_besiroglu_recipe() -> None:
    """Their exact recipe: Huber delta 1e-3 summed, L-BFGS from all 5400 grid starts."""
    N, D, loss = chinchilla_runs()
    model = ChinchillaLaw(init_grid=BESIROGLU_GRID).fit(N, D, loss)
    assert model.n_starts_ == 5400
    check_against_published(model)


def test_chinchilla_bootstrap_standard_errors_match_published() -> None:
    N, D, loss = chinchilla_runs()
    model = ChinchillaLaw(init_grid=COARSE_GRID).fit(N, D, loss)
    boot = bootstrap_law(model, N, D, loss, n_resamples=100, seed=0)
    se_alpha, se_beta = boot.params[:, 3:].std(axis=0, ddof=1)
    print("bootstrap se alpha, beta:", se_alpha, se_beta)
    # Published: ~0.015 and ~0.02; 100 resamples estimate a se to ~7 %, so allow 1.5x either way.
    assert 0.015 / 1.5 < se_alpha < 0.015 * 1.5
    assert 0.02 / 1.5 < se_beta < 0.02 * 1.5


def test_chinchilla_isoflop_exponent() -> None:
    """Hoffmann et al. report a = 0.49 from their IsoFLOP profiles; we require |a - 0.5| < 0.05
    and the published 0.49 inside the bootstrap interval."""
    data = load_table(REFERENCE / "chinchilla_isoflops.csv", TableColumns(n="params", d="tokens"))
    result = isoflop(data.cells, rel_tol=0.1, n_resamples=1000, seed=0, level=0.95)
    assert not isinstance(result, str)
    a = result.exponent
    print("isoflop a:", a, "least-squares se:", result.frontier.slope.se)
    assert abs(a.value - 0.5) < 0.05
    assert a.lo is not None and a.hi is not None
    assert a.lo <= 0.49 <= a.hi
    assert len(result.parabolas) >= 8  # of the 9 budgets
