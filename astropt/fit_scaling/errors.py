"""The one exception the fitter raises for bad input, and the check that raises it most."""

from collections.abc import Callable

import numpy as np


class FitInputError(ValueError):
    """Input the fitter cannot use; the message says where (file, column, row) and what was
    expected. The CLI turns it into a one-line message and exit code 2."""


def require_positive_finite(
    values: np.ndarray,
    where: str,
    row_label: Callable[[int], str],
    raw: np.ndarray | None = None,
) -> None:
    """Raise FitInputError at the first value that is not a finite positive number.

    ``where`` names the source and column, ``row_label(i)`` names row ``i``; ``raw`` holds the
    original values for the message when ``values`` was coerced to float (text becomes NaN).
    """
    bad = np.flatnonzero(~(np.isfinite(values) & (values > 0)))
    if bad.size == 0:
        return
    first = int(bad[0])
    shown = (values if raw is None else raw)[first]
    if isinstance(shown, np.generic):
        shown = shown.item()
    more = f" ({bad.size} such values in total)" if bad.size > 1 else ""
    raise FitInputError(
        f"{where}, {row_label(first)}: expected a finite positive number, got {shown!r}{more}"
    )
