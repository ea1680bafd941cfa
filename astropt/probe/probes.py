"""Linear probes with k-fold cross-validation: ridge for continuous targets, logistic
regression for binary and categorical ones.

Continuous targets are standardised robustly before probing: values further than `mad_cut`
robust sigmas (1.4826 x the median absolute deviation) from the median are dropped as outliers,
and the rest are centred on their median and divided by their interquartile range. Errors are
therefore in IQR units of the target ("robust-standardised units"), comparable across targets.
A zero-inflated target (more than half its values equal, so MAD = 0) keeps every row, and one
whose IQR is zero is scaled by its standard deviation instead.

Features are standardised inside each training fold (fit on the training part only); the ridge
penalty is chosen per fold by efficient leave-one-out CV (RidgeCV) on the training part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import accuracy_score, r2_score, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from astropt.probe.errors import ProbeInputError

REGRESSION, CLASSIFICATION = "regression", "classification"
METRICS = {REGRESSION: ("r2", "medae"), CLASSIFICATION: ("accuracy", "auc")}
ALL_METRICS = [m for names in METRICS.values() for m in names]
MAD_TO_SIGMA = 1.4826  # MAD of a Gaussian is 0.6745 sigma
RIDGE_ALPHAS = np.logspace(-3, 4, 15)
MIN_TEST_ROWS = 2  # R^2 needs at least two test rows per fold


@dataclass(frozen=True)
class Target:
    """A probe target ready for CV: its values on the rows kept (`rows` index the data)."""

    name: str
    kind: str
    values: np.ndarray
    rows: np.ndarray
    n_dropped: int


@dataclass(frozen=True)
class Score:
    """A metric's mean over the CV folds and its spread (sample std over folds)."""

    mean: float
    std: float


def target_kind(column: pd.Series) -> str:
    """Booleans, strings and two-valued numbers are classes; other numbers are continuous."""
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return CLASSIFICATION
    return CLASSIFICATION if column.dropna().nunique() == 2 else REGRESSION


def robust_standardise(values: np.ndarray, mad_cut: float) -> tuple[np.ndarray, np.ndarray]:
    """(standardised kept values, mask of the kept rows); see the module docstring."""
    deviation = np.abs(values - np.median(values))
    mad = np.median(deviation)
    keep = deviation <= mad_cut * MAD_TO_SIGMA * mad if mad > 0 else np.ones(len(values), bool)
    kept = values[keep]
    q1, median, q3 = np.percentile(kept, [25, 50, 75])
    scale = q3 - q1 if q3 > q1 else kept.std()
    return (kept - median) / scale, keep


def _class_codes(name: str, labels: np.ndarray, folds: int) -> tuple[np.ndarray, np.ndarray]:
    """(integer class codes, mask of kept rows): classes rarer than `folds` cannot appear in
    every fold, so their rows are dropped."""
    classes, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    common = counts >= folds
    if common.sum() < 2:
        shown = ", ".join(f"{c!r}: {n}" for c, n in zip(classes, counts, strict=True))
        raise ProbeInputError(
            f"target {name!r} needs at least 2 classes with {folds} or more rows each for "
            f"{folds}-fold CV; it has {shown}"
        )
    keep = common[codes]
    _, recoded = np.unique(codes[keep], return_inverse=True)
    return recoded, keep


def is_constant(column: pd.Series) -> bool:
    """Whether a column has fewer than two distinct non-null values."""
    return column.dropna().nunique() < 2


def prepare_target(name: str, column: pd.Series, folds: int, mad_cut: float) -> Target:
    """Check a metadata column can be probed and make its CV-ready values."""
    present = np.flatnonzero(column.notna().to_numpy())
    raw = column.to_numpy()[present]
    if is_constant(column):
        value = repr(raw[:1].tolist()[0]) if len(raw) else "null"
        raise ProbeInputError(
            f"target {name!r} is constant ({value} in all {len(raw)} non-null rows of "
            f"{len(column)}); nothing to probe"
        )
    kind = target_kind(column)
    if kind == REGRESSION:
        values, keep = robust_standardise(raw.astype(np.float64), mad_cut)
    else:
        values, keep = _class_codes(name, raw, folds)
    rows = present[keep]
    needed = MIN_TEST_ROWS * folds
    if len(rows) < needed:
        raise ProbeInputError(
            f"target {name!r}: {len(rows)} usable rows ({len(column) - len(rows)} of "
            f"{len(column)} missing or dropped) are too few for {folds}-fold CV; "
            f"need at least {needed} ({MIN_TEST_ROWS} per fold)"
        )
    return Target(name, kind, values, rows, len(column) - len(rows))


def _model(kind: str) -> Pipeline:
    if kind == REGRESSION:
        return make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS))
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def _fold_scores(kind: str, model: Pipeline, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    if kind == REGRESSION:
        predicted = model.predict(x)
        return {"r2": r2_score(y, predicted), "medae": float(np.median(np.abs(predicted - y)))}
    proba = model.predict_proba(x)
    auc = (
        roc_auc_score(y, proba[:, 1])
        if proba.shape[1] == 2
        else roc_auc_score(y, proba, multi_class="ovr", labels=np.arange(proba.shape[1]))
    )
    return {"accuracy": accuracy_score(y, proba.argmax(axis=1)), "auc": auc}


def cross_validate(features: np.ndarray, target: Target, folds: int, seed: int) -> dict[str, Score]:
    """Each metric's mean and spread over `folds` shuffled (stratified, for classes) folds."""
    x, y = features[target.rows], target.values
    splitter_type = KFold if target.kind == REGRESSION else StratifiedKFold
    splitter = splitter_type(n_splits=folds, shuffle=True, random_state=seed)
    per_fold: dict[str, list[float]] = {m: [] for m in METRICS[target.kind]}
    for train, test in splitter.split(x, y):
        model = _model(target.kind).fit(x[train], y[train])
        for metric, value in _fold_scores(target.kind, model, x[test], y[test]).items():
            per_fold[metric].append(float(value))
    return {m: Score(float(np.mean(v)), float(np.std(v, ddof=1))) for m, v in per_fold.items()}
