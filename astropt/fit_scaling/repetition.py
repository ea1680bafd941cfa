"""Repeated data: how many cells saw their training set more than once, and the effective data
of Muennighoff et al. 2023 ("Scaling Data-Constrained Language Models", arXiv:2305.16264, Eq. 5):

    D' = U_D + U_D R*_D (1 - exp(-R_D / R*_D)),   U_D = min(D, U),   R_D = D / U_D - 1,

U the unique tokens available, D the tokens seen. A repeated token is worth less the more often
it has been seen; R*_D = 15.39 is their fit on C4 text (the released parametric fit), so that
4 epochs give D' = 0.93 D, 16 give 0.66 D and 40 give 0.38 D. It has not been measured for
galaxy images: the corrected fit assumes images lose value under repetition as text does.

Mode ``auto`` (the default) applies it when some cell repeats data: then treating repeated
tokens as unique would overstate D for exactly those cells and bias beta; where no cell repeats,
D' = D and the correction does nothing. ``on`` applies it whenever epochs are known, ``off``
never (the report then counts the repeating cells as a warning).
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from astropt.fit_scaling.errors import FitInputError
from astropt.record import Metric, Param

MODES = ("auto", "on", "off")
R_STAR_D = 15.387756  # Muennighoff et al. 2023, fitted on C4 (github.com/huggingface/datablations)


@dataclass(frozen=True)
class Repetition:
    """Epoch accounting of the cells, and whether D was replaced by effective data D'."""

    mode: str
    n_cells: int
    n_known: int  # cells whose epochs are known
    n_repeated: int  # cells with epochs > 1
    max_epochs: float | None
    applied: bool
    min_ratio: float  # smallest D' / D over the cells (1 when not applied)

    @property
    def summary(self) -> str:
        if self.n_known == 0:
            return "epochs not recorded for any cell: every token is treated as unique"
        seen = (
            f"{self.n_repeated} of {self.n_known} cell(s) with known epochs repeat data "
            f"(max {self.max_epochs:.4g} epochs)"
        )
        if self.n_repeated == 0:
            return f"{seen}: the data-constrained correction does nothing (D' = D)"
        if not self.applied:
            return f"{seen}; not corrected (--data-constrained off): repeats count as unique"
        return (
            f"{seen}; D replaced by Muennighoff et al.'s effective data D' (R*_D = {R_STAR_D:.4g}, "
            f"fitted on text), D'/D down to {self.min_ratio:.4g}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "cells": self.n_cells,
            "cells_with_epochs": self.n_known,
            "cells_repeating": self.n_repeated,
            "max_epochs": self.max_epochs,
            "applied": self.applied,
            "r_star_d": R_STAR_D,
            "min_effective_ratio": self.min_ratio,
            "summary": self.summary,
        }


def epochs_of(cells: pd.DataFrame) -> np.ndarray:
    """Epochs per cell: recorded, else tokens / unique tokens, else NaN."""
    derived = cells["D"] / cells["unique_tokens"]
    return cells["epochs"].fillna(derived).to_numpy(dtype=float)


def effective_data(tokens: np.ndarray, epochs: np.ndarray) -> np.ndarray:
    """D' of Muennighoff et al. (the module docstring) from tokens seen and epochs."""
    unique_seen = tokens / np.maximum(epochs, 1.0)
    repeats = np.maximum(epochs, 1.0) - 1.0
    return unique_seen * (1.0 + R_STAR_D * -np.expm1(-repeats / R_STAR_D))


def account_repetition(cells: pd.DataFrame, mode: str) -> tuple[pd.DataFrame, Repetition]:
    """The cells with ``tokens`` (tokens seen) and ``epochs`` filled in and D replaced by D' if
    the correction applies (cells of unknown epochs keep D), and the accounting."""
    cells = cells.copy()
    cells["tokens"] = cells["D"]
    cells["epochs"] = epochs_of(cells)
    known = cells["epochs"].notna()
    if mode == "on" and not known.any():
        raise FitInputError(
            "--data-constrained on: no cell has epochs or unique tokens (MLflow metric "
            f"{Metric.FINAL_EPOCHS} or param {Param.UNIQUE_TOKENS}; table columns --epochs-col, "
            "--unique-col)"
        )
    epochs = cells["epochs"][known].to_numpy()
    repeated = int((epochs > 1.0).sum())
    applied = mode == "on" or (mode == "auto" and repeated > 0)
    ratio = 1.0
    if applied:
        corrected = effective_data(cells["tokens"][known].to_numpy(), epochs)
        ratio = float((corrected / cells["tokens"][known].to_numpy()).min())
        cells.loc[known, "D"] = corrected
    return cells, Repetition(
        mode=mode,
        n_cells=len(cells),
        n_known=int(known.sum()),
        n_repeated=repeated,
        max_epochs=float(epochs.max()) if epochs.size else None,
        applied=applied,
        min_ratio=ratio,
    )
