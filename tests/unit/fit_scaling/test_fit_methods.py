"""IsoFLOP, envelope, single-variable power laws, extrapolation check and grouping, on small
synthetic cases with known answers."""

import numpy as np
import pandas as pd
import pytest

from astropt.fit_scaling import COARSE_GRID, ChinchillaLaw
from astropt.fit_scaling.envelope import Curve, envelope
from astropt.fit_scaling.extrapolation import extrapolation_check
from astropt.fit_scaling.grouping import group_by_tolerance
from astropt.fit_scaling.isoflop import isoflop
from astropt.fit_scaling.power_law import fit_saturating, loglog_fit
from astropt.fit_scaling.sources import cells_frame

# a = beta / (alpha + beta) = 0.5 and G = (A / B)^(1 / 0.6) = 0.0992.
E, A, B, ALPHA, BETA = 1.0, 50.0, 200.0, 0.3, 0.3


def law(N: np.ndarray, D: np.ndarray) -> np.ndarray:
    return E + A / N**ALPHA + B / D**BETA


def isoflop_cells(sizes: tuple[float, ...], budgets: tuple[float, ...]) -> pd.DataFrame:
    N, C = (a.ravel() for a in np.meshgrid(sizes, budgets))
    D = C / (6 * N)
    return cells_frame([f"c{i}" for i in range(N.size)], N, D, law(N, D))


def test_group_by_tolerance_anchors_groups_on_their_smallest_value() -> None:
    values = np.array([1.0, 1.05, 2.0, 2.1, 10.0, 1.09, 1.2])
    labels = group_by_tolerance(values, rel_tol=0.1)
    assert len(np.unique(labels)) == 4  # {1, 1.05, 1.09}, {1.2}, {2, 2.1}, {10}
    assert labels[0] == labels[1] == labels[5] == 1.0
    assert labels[2] == labels[3] == 2.0 and labels[6] == 1.2 and labels[4] == 10.0


def test_loglog_fit_recovers_exponent_and_standard_error() -> None:
    x = np.geomspace(1.0, 1e6, 7)
    fit = loglog_fit(x, 3.0 * x**0.5)
    assert fit.slope.value == pytest.approx(0.5) and fit.slope.se == pytest.approx(0.0, abs=1e-9)
    assert fit.predict(np.array([100.0]))[0] == pytest.approx(30.0)
    assert loglog_fit(x[:2], x[:2]).slope.se is None


def test_isoflop_on_exact_law_finds_the_analytic_optimum() -> None:
    budgets = (3e15, 1e16, 3e16, 1e17)
    cells = isoflop_cells((1e6, 2e6, 4e6, 8e6, 16e6, 32e6), budgets)
    result = isoflop(cells, rel_tol=0.1, n_resamples=50, seed=0, level=0.95)
    assert not isinstance(result, str)
    # Parabolas in ln N only approximate the law, so N* is close, not exact.
    g = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
    for p in result.parabolas:
        assert p.N_opt == pytest.approx(g * (p.budget / 6) ** 0.5, rel=0.1)
    assert result.exponent.value == pytest.approx(0.5, abs=0.03)
    assert result.n_failed == 0


def test_isoflop_explains_unusable_budgets() -> None:
    cells = isoflop_cells((1e6, 2e6, 4e6, 8e6, 16e6), (3e15, 1e16, 3e16))
    small = isoflop_cells((1e6, 2e6), (1e18,))  # two sizes only
    high = isoflop_cells((1e6, 2e6, 4e6), (1e19,))  # optimum far above the sizes sampled
    everything = pd.concat([cells, small, high], ignore_index=True)
    result = isoflop(everything, rel_tol=0.1, n_resamples=10, seed=0, level=0.95)
    assert not isinstance(result, str)
    reasons = dict(result.skipped)
    assert reasons[1e18] == "2 model size(s); need 3"
    assert (
        reasons[1e19].startswith("minimum at N = ") and "outside the sampled sizes" in reasons[1e19]
    )
    assert (
        isoflop(small, 0.1, 10, 0, 0.95) == "0 budget(s) with >= 3 model sizes and a convex minimum"
    )


def test_envelope_follows_the_best_run_at_each_compute() -> None:
    curves = []
    for n in (1e6, 4e6, 16e6):
        tokens = np.geomspace(1e7, 2e9, 40)
        curves.append(Curve(cell=f"n{n:g}", N=n, tokens=tokens, loss=law(n, tokens)))
    result = envelope(curves, n_points=60)
    assert not isinstance(result, str)
    # The envelope is the minimum of the curves, and larger models take over at larger compute.
    for c, loss in zip(result.compute, result.loss, strict=True):
        tokens = [c / (6 * cv.N) for cv in curves]
        covering = [
            law(cv.N, t)
            for cv, t in zip(curves, tokens, strict=True)
            if cv.tokens[0] * (1 - 1e-9) <= t <= cv.tokens[-1] * (1 + 1e-9)
        ]
        assert loss == pytest.approx(min(covering), rel=2e-3)
    assert list(dict.fromkeys(result.cells)) == ["n1e+06", "n4e+06", "n1.6e+07"]
    assert 0.2 < result.frontier.slope.value < 0.8
    assert envelope(curves[:1]) == "the envelope is reached by a single model size"


def test_saturating_power_law_recovers_exact_parameters() -> None:
    x = np.geomspace(1e6, 1e9, 6)
    E_, coef, exponent = fit_saturating(x, 2.0 + 300.0 / x**0.4, delta=1e-3)
    assert (E_, coef, exponent) == pytest.approx((2.0, 300.0, 0.4), rel=1e-4)


def test_extrapolation_check_holds_out_the_top_compute_cells() -> None:
    cells = isoflop_cells((1e6, 2e6, 4e6, 8e6, 16e6), (3e15, 1e16, 3e16, 1e17))
    result = extrapolation_check(ChinchillaLaw(init_grid=COARSE_GRID), cells, fraction=0.2)
    assert not isinstance(result, str)
    assert len(result.held_out) == 4 and result.n_train == 16
    assert (result.held_out["C"] == 1e17).sum() == 4
    assert result.max_abs_rel_error < 1e-4  # exact data extrapolate exactly
    too_few = extrapolation_check(ChinchillaLaw(init_grid=COARSE_GRID), cells.iloc[:5], 0.2)
    assert too_few.startswith("without the 1 highest-compute cell(s): need at least 5 distinct")
