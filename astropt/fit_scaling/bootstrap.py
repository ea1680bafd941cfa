"""Bootstrap resampling over runs, and summaries of bootstrap samples."""

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.base import clone

from astropt.fit_scaling.errors import FitInputError
from astropt.fit_scaling.parametric import ChinchillaLaw, theta_to_params

# Scale of the Gaussian perturbations of the full-data optimum [a, b, e, alpha, beta] used as
# extra starts per resample (a, b move together with alpha, beta through log N ~ 20).
_PERTURBATION_SCALE = np.array([1.0, 1.0, 0.2, 0.05, 0.05])


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap (or regression) standard error and interval."""

    value: float
    se: float | None = None
    lo: float | None = None
    hi: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


@dataclass(frozen=True)
class LawBootstrap:
    """Bootstrap refits of a ChinchillaLaw: ``params`` rows are [E, A, B, alpha, beta]."""

    params: np.ndarray
    n_resamples: int
    n_failed: int
    seed: int


def resample_indices(rng: np.random.Generator, groups: np.ndarray) -> np.ndarray:
    """Indices drawn with replacement within each group (one group: the plain bootstrap)."""
    parts = []
    for label in np.unique(groups):
        members = np.flatnonzero(groups == label)
        parts.append(rng.choice(members, size=members.size, replace=True))
    return np.concatenate(parts)


def summarise(value: float, samples: np.ndarray, level: float) -> Estimate:
    """Standard error (sample std) and central percentile interval of the finite samples."""
    finite = samples[np.isfinite(samples)]
    if finite.size < 2:
        return Estimate(value=value)
    tail = 50.0 * (1.0 - level)
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return Estimate(value=value, se=float(finite.std(ddof=1)), lo=float(lo), hi=float(hi))


def bootstrap_law(
    model: ChinchillaLaw,
    N: np.ndarray,
    D: np.ndarray,
    loss: np.ndarray,
    n_resamples: int,
    seed: int,
    n_perturbed: int = 2,
) -> LawBootstrap:
    """Refit ``model`` (already fitted on the full data) on runs resampled with replacement.

    Each resample starts L-BFGS from the full-data optimum plus ``n_perturbed`` Gaussian
    perturbations of it instead of the whole initialisation grid: a resample's optimum lies near
    the full-data one, and the grid would cost ~1000x more per resample. Resamples with fewer
    distinct (N, D) points than parameters cannot be fitted and are counted in ``n_failed``.
    """
    rng = np.random.default_rng(seed)
    single_group = np.zeros(len(N), dtype=int)
    rows = []
    for _ in range(n_resamples):
        idx = resample_indices(rng, single_group)
        noise = rng.normal(size=(n_perturbed, model.theta_.size)) * _PERTURBATION_SCALE
        starts = np.vstack([model.theta_, model.theta_ + noise])
        try:
            refit = clone(model).fit(N[idx], D[idx], loss[idx], starts=starts)
        except FitInputError:
            continue
        rows.append(refit.theta_)
    params = theta_to_params(np.array(rows).reshape(-1, model.theta_.size))
    return LawBootstrap(
        params=params, n_resamples=n_resamples, n_failed=n_resamples - len(rows), seed=seed
    )
