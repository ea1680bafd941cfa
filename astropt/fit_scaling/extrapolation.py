"""Extrapolation check: refit the parametric law without the highest-compute cells and compare
its predictions for them with what they actually reached."""

from dataclasses import dataclass

import pandas as pd
from sklearn.base import clone

from astropt.fit_scaling.errors import FitInputError
from astropt.fit_scaling.parametric import ChinchillaLaw


@dataclass(frozen=True)
class ExtrapolationResult:
    """``held_out`` has columns cell, N, D, C, loss, predicted, rel_error (signed)."""

    held_out: pd.DataFrame
    n_train: int
    fraction: float
    train_params: dict[str, float]

    @property
    def mean_abs_rel_error(self) -> float:
        return float(self.held_out["rel_error"].abs().mean())

    @property
    def max_abs_rel_error(self) -> float:
        return float(self.held_out["rel_error"].abs().max())

    def to_dict(self) -> dict[str, object]:
        return {
            "held_out_fraction": self.fraction,
            "n_train": self.n_train,
            "n_held_out": len(self.held_out),
            "mean_abs_rel_error": self.mean_abs_rel_error,
            "max_abs_rel_error": self.max_abs_rel_error,
            "train_fit": self.train_params,
            "held_out": self.held_out.to_dict(orient="records"),
        }


def extrapolation_check(
    model: ChinchillaLaw, cells: pd.DataFrame, fraction: float
) -> ExtrapolationResult | str:
    """Hold out the top ``fraction`` of cells by compute (at least one), refit an unfitted copy of
    ``model`` on the rest, and report the relative error (predicted - actual) / actual."""
    n_out = max(1, int(fraction * len(cells)))
    ranked = cells.sort_values("C", ascending=False, kind="stable")
    held, train = ranked.iloc[:n_out], ranked.iloc[n_out:]
    try:
        refit = clone(model).fit(train["N"], train["D"], train["loss"])
    except FitInputError as err:
        return f"without the {n_out} highest-compute cell(s): {err}"
    predicted = refit.predict(held["N"].to_numpy(), held["D"].to_numpy())
    held_out = held[["cell", "N", "D", "C", "loss"]].assign(
        predicted=predicted, rel_error=(predicted - held["loss"].to_numpy()) / held["loss"]
    )
    return ExtrapolationResult(
        held_out=held_out.reset_index(drop=True),
        n_train=len(train),
        fraction=fraction,
        train_params=refit.params_,
    )
