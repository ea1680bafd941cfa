"""The parametric law, its bootstrap and the compute-optimal allocation, on synthetic data."""

import numpy as np
import pytest
from scipy.optimize import minimize, minimize_scalar
from sklearn.base import clone

from astropt.fit_scaling import COARSE_GRID, ChinchillaLaw, FitInputError
from astropt.fit_scaling.allocation import compute_optimal, derived
from astropt.fit_scaling.bootstrap import bootstrap_law
from astropt.fit_scaling.huber_lse import grid_starts, huber_objective
from astropt.fit_scaling.parametric import THETA_ORDER

# Hoffmann et al. 2022's own Approach 3 estimates, used as a known law.
TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def law(N: np.ndarray, D: np.ndarray) -> np.ndarray:
    return TRUE["E"] + TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]


def grid_points() -> tuple[np.ndarray, np.ndarray]:
    """7 sizes x 7 token counts, the range of a small LM sweep."""
    N, D = np.meshgrid(np.geomspace(5e7, 5e9, 7), np.geomspace(1e9, 5e11, 7))
    return N.ravel(), D.ravel()


def test_recovers_known_law_within_bootstrap_intervals() -> None:
    # Seed 1 of 1 % log-normal noise. Over seeds 0-9 (200 resamples each) all five true values
    # fell inside their 95 % intervals for 9 of the 10 seeds, as intervals of that level should.
    N, D = grid_points()
    loss = law(N, D) * np.exp(np.random.default_rng(1).normal(0.0, 0.01, N.size))
    model = ChinchillaLaw(init_grid=COARSE_GRID).fit(N, D, loss)
    boot = bootstrap_law(model, N, D, loss, n_resamples=200, seed=0)
    assert boot.n_failed == 0
    lo, hi = np.percentile(boot.params, [2.5, 97.5], axis=0)
    fitted = model.params_
    print({k: (fitted[k], lo[i], hi[i]) for i, k in enumerate(TRUE)})
    for i, (name, true) in enumerate(TRUE.items()):
        assert lo[i] <= true <= hi[i], name
    # ...and the intervals are informative, not just wide.
    assert hi[3] - lo[3] < 0.1 and hi[4] - lo[4] < 0.1
    assert hi[0] - lo[0] < 0.3


def test_exact_data_gives_exact_fit_and_predictions() -> None:
    N, D = grid_points()
    model = ChinchillaLaw(init_grid=COARSE_GRID).fit(N, D, law(N, D))
    for name, true in TRUE.items():
        assert model.params_[name] == pytest.approx(true, rel=1e-4), name
    assert model.predict(3e8, 7e10) == pytest.approx(law(np.array(3e8), np.array(7e10)), rel=1e-6)
    assert model.predict(N, D).shape == N.shape
    assert model.objective_ < 1e-12
    assert model.n_starts_ == 3**5


def test_is_a_scikit_learn_style_estimator() -> None:
    model = ChinchillaLaw(huber_delta=1e-2, init_grid=COARSE_GRID)
    assert model.get_params() == {"huber_delta": 1e-2, "init_grid": COARSE_GRID}
    copy = clone(model)
    assert copy.get_params()["huber_delta"] == 1e-2
    assert not hasattr(copy, "theta_")
    N, D = grid_points()
    assert copy.fit(N, D, law(N, D)) is copy
    assert {"theta_", "E_", "A_", "B_", "alpha_", "beta_", "objective_"} <= set(vars(copy))


@pytest.mark.parametrize(
    ("N", "D", "loss", "message"),
    [
        ([1e8] * 6, [1e9, 2e9, 3e9, 4e9, 1e9, 2e9], [3.0] * 6, "at least 5 distinct .* got 4"),
        ([1e8, 2e8, -1.0, 4e8, 5e8], [1e9] * 5, [3.0] * 5, "N, index 2: .* got -1.0"),
        ([1e8, 2e8, 3e8, 4e8, 5e8], [1e9] * 5, [3.0, np.nan, 3, 3, 3], "loss, index 1: .* nan"),
        ([1e8, 2e8], [1e9, 2e9, 3e9], [3.0, 3.0], "same length"),
    ],
)
def test_estimator_rejects_bad_input(N: list, D: list, loss: list, message: str) -> None:
    with pytest.raises(FitInputError, match=message):
        ChinchillaLaw(init_grid=COARSE_GRID).fit(N, D, loss)


def test_compute_optimal_allocation_minimises_the_law_at_fixed_compute() -> None:
    params = np.array([TRUE[k] for k in ("E", "A", "B", "alpha", "beta")])
    computes = np.array([1e20, 1e23])
    optimum = compute_optimal(params, computes)
    for i, c in enumerate(computes):
        # Brute force: minimise L(N, C / 6N) over ln N.
        found = minimize_scalar(
            lambda ln_n, c=c: law(np.exp(ln_n), c / (6 * np.exp(ln_n))),
            bounds=(10.0, 40.0),
            method="bounded",
            options={"xatol": 1e-10},
        )
        assert optimum["N_opt"][i] == pytest.approx(np.exp(found.x), rel=1e-4)
        assert optimum["N_opt"][i] * optimum["D_opt"][i] * 6 == pytest.approx(c)
        assert optimum["loss"][i] == pytest.approx(found.fun, rel=1e-9)
    d = derived(params)
    assert d["a"] + d["b"] == pytest.approx(1.0)
    assert d["a"] == pytest.approx(0.28 / 0.62)
    # A bootstrap-shaped (m, 5) parameter array gives (m, n_computes).
    assert compute_optimal(np.stack([params] * 3), computes)["N_opt"].shape == (3, 2)


def lbfgs_from_every_start(N: np.ndarray, D: np.ndarray, loss: np.ndarray) -> float:
    """The Besiroglu et al. recipe without shortcuts: L-BFGS from every start of the coarse grid,
    the best polished; returns its objective."""
    log_x, log_y = np.log(np.stack([N, D])), np.log(loss)
    starts = grid_starts([COARSE_GRID[name] for name in THETA_ORDER])
    best = min(
        (
            minimize(huber_objective, s, args=(log_x, log_y, 1e-3), jac=True, method="L-BFGS-B")
            for s in starts
        ),
        key=lambda r: r.fun,
    )
    polished = minimize(
        huber_objective,
        best.x,
        args=(log_x, log_y, 1e-3),
        jac=True,
        method="L-BFGS-B",
        options={"ftol": 0.0, "gtol": 1e-10, "maxiter": 10_000},
    )
    return min(best.fun, polished.fun)


@pytest.mark.parametrize("seed", range(4))
def test_start_selection_finds_the_optimum_of_every_start_on_awkward_tables(seed: int) -> None:
    """Few cells, a loss that barely follows the law: the landscape has several basins. The
    batched screening of all starts must reach an objective as low as L-BFGS from each start."""
    rng = np.random.default_rng(100 + seed)
    N = np.repeat(np.geomspace(1e6, rng.uniform(2, 30) * 1e6, 3), 3)
    D = np.tile(np.geomspace(2e6, rng.uniform(3, 30) * 2e6, 3), 3)
    loss = rng.uniform(0.2, 0.5) + rng.uniform(0, 0.1) * rng.random(9) + 0.5 / N**0.1
    fitted = ChinchillaLaw(init_grid=COARSE_GRID).fit(N, D, loss)
    reference = lbfgs_from_every_start(N, D, loss)
    print("objective", fitted.objective_, "reference", reference)
    assert fitted.objective_ <= reference * (1 + 1e-6)
