"""MLflow names the fit writes: its own run's params and metrics, and the headline it copies onto
the sweep's parent run.

LOCAL, pending astropt.record: that module owns the MLflow record's names but does not declare
these yet (asked for in fit_scaling's report to the lead). Until it does they are declared here,
once; nothing else in fit_scaling spells an MLflow name.
"""

from enum import StrEnum

FIT_RUN_NAME = "fit"
ESTIMATE_SUFFIXES = ("se", "lo", "hi")  # an estimate X is logged as X, X_se, X_lo, X_hi


class FitTag(StrEnum):
    FIT_RUN = "astropt.fit_run"  # on the sweep's parent: the latest fit run's id
    FIT_CHECKS = "astropt.fit_checks"  # "ok", or e.g. "2 errors, 1 warning"


class FitParam(StrEnum):
    N_CELLS = "n_cells"
    N_EXCLUDED = "n_excluded"
    INIT_GRID_STARTS = "init_grid_starts"
    COMPUTE = "compute"  # which compute drove the IsoFLOP grouping and the allocation
    DATA_CONSTRAINED = "data_constrained"  # whether D was replaced by effective data


class FitMetric(StrEnum):
    ISOFLOP_A = "isoflop/a"
    ENVELOPE_A = "envelope/a"
    EXTRAPOLATION_MEAN = "extrapolation/mean_abs_rel_error"
    EXTRAPOLATION_MAX = "extrapolation/max_abs_rel_error"
    CHECK_ERRORS = "checks/errors"
    CHECK_WARNINGS = "checks/warnings"


def law_metric(name: str) -> str:
    """The parametric law's estimate `name` (E, A, B, alpha, beta, a, b, G)."""
    return f"fit/{name}"


def allocation_metric(compute: float, quantity: str) -> str:
    """The compute-optimal N_opt, D_opt or loss at one budget (MLflow names may not hold '+')."""
    return f"optimal_{compute:.3g}".replace("+", "") + f"/{quantity}"


def power_law_metric(variable: str, name: str) -> str:
    """A coefficient of the single-variable law L(variable)."""
    return f"power_law_{variable}/{name}"
