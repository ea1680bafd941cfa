"""Bootstrap resampling over runs, and summaries of bootstrap samples."""

from dataclasses import asdict, dataclass

import numpy as np

from astropt.fit_scaling.huber_lse import minimise_each
from astropt.fit_scaling.parametric import N_PARAMS, ChinchillaLaw, theta_to_params

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
    """Bootstrap refits of a ChinchillaLaw: ``params`` rows are [E, A, B, alpha, beta];
    ``failures`` counts the resamples that could not be fitted, by reason; ``n_unconverged``
    those whose refit had not converged (kept in ``params``: a flat objective)."""

    params: np.ndarray
    n_resamples: int
    failures: dict[str, int]
    seed: int
    n_unconverged: int = 0

    @property
    def n_failed(self) -> int:
        return sum(self.failures.values())


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


def _distinct_points(N: np.ndarray, D: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """How many distinct (N, D) points each resample (a row of ``counts``) holds."""
    _, pair = np.unique(np.stack([N, D], axis=1), axis=0, return_inverse=True)
    members = np.zeros((counts.shape[0], pair.max() + 1))
    np.add.at(members.T, pair.ravel(), counts.T)
    return (members > 0).sum(axis=1)


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

    All resamples are fitted together (huber_lse.minimise_each), each from the full-data optimum
    plus ``n_perturbed`` Gaussian perturbations of it instead of the whole initialisation grid: a
    resample's optimum lies near the full-data one. Resamples with fewer distinct (N, D) points
    than parameters cannot be fitted; they are counted in ``failures``.
    """
    rng = np.random.default_rng(seed)
    n, p = len(N), model.theta_.size
    counts = np.zeros((n_resamples, n))
    starts = np.empty((n_resamples, 1 + n_perturbed, p))
    single_group = np.zeros(n, dtype=int)
    for i in range(n_resamples):
        counts[i] = np.bincount(resample_indices(rng, single_group), minlength=n)
        noise = rng.normal(size=(n_perturbed, p)) * _PERTURBATION_SCALE
        starts[i] = np.vstack([model.theta_, model.theta_ + noise])
    fittable = _distinct_points(N, D, counts) >= N_PARAMS
    log_x, log_y = np.log(np.stack([N, D])), np.log(loss)
    theta, converged = minimise_each(
        starts[fittable], log_x, log_y, model.huber_delta, counts[fittable]
    )
    failed = int((~fittable).sum())
    reason = f"fewer than {N_PARAMS} distinct (N, D) points"
    return LawBootstrap(
        params=theta_to_params(theta.reshape(-1, p)),
        n_resamples=n_resamples,
        failures={reason: failed} if failed else {},
        seed=seed,
        n_unconverged=int((~converged).sum()),
    )
