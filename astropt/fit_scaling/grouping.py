"""Grouping of positive values that are equal up to a relative tolerance (FLOP budgets, token
counts that overshoot their budget by a partial batch)."""

import numpy as np


def group_by_tolerance(values: np.ndarray, rel_tol: float) -> np.ndarray:
    """Label each value with the smallest value of its group.

    Values are sorted and a new group starts whenever a value exceeds the group's smallest
    value by more than ``rel_tol`` (relative); anchoring on the smallest value keeps a chain of
    close values from merging into one wide group. The smallest value is also the best label:
    runs stop at the first step past their budget, so they overshoot it, never undershoot.
    """
    values = np.asarray(values, dtype=float)
    labels = np.empty(values.size)
    anchor = -np.inf
    for i in np.argsort(values, kind="stable"):
        if values[i] > anchor * (1.0 + rel_tol):
            anchor = values[i]
        labels[i] = anchor
    return labels
