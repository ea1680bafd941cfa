"""A learning-rate axis: several runs of one (N, D), each at another learning rate (or multiplier
of the size's base rate). The law describes well-tuned models, so each (N, D) is represented by
its run with the lowest final loss; the others are excluded with the reason. Untuned learning
rates move the fitted exponents (Porian et al. 2024, "Resolving Discrepancies in Compute-Optimal
Scaling of Language Models", arXiv:2406.19146; Li, Kudugunta and Zettlemoyer, "(Mis)Fitting: A
Survey of Scaling Laws", ICLR 2025, arXiv:2502.18969), so a winner at the edge of the values
tried is flagged: the best rate may lie beyond them.

Runs of one (N, D) are those with equal N and D equal within the grouping tolerance; runs without
a learning rate are kept as they are (repeated runs at one rate, seeds, are not selected among).
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from astropt.fit_scaling.grouping import group_by_tolerance
from astropt.fit_scaling.sources import Exclusion
from astropt.record import Status

AXES = ("lr_multiplier", "lr")  # the multiplier when cells record it, else the rate itself


@dataclass(frozen=True)
class LrChoice:
    """The winning learning rate of one (N, D), among the values tried there."""

    N: float
    D: float
    axis: str
    tried: tuple[float, ...]
    best: float
    cell: str
    loss: float

    @property
    def at_edge(self) -> bool:
        return self.best in (self.tried[0], self.tried[-1])

    def to_dict(self) -> dict[str, object]:
        return {
            "N": self.N,
            "D": self.D,
            "axis": self.axis,
            "tried": list(self.tried),
            "best": self.best,
            "cell": self.cell,
            "loss": self.loss,
            "at_edge": self.at_edge,
        }


def _axis(cells: pd.DataFrame) -> str | None:
    return next((axis for axis in AXES if cells[axis].notna().any()), None)


def _groups(cells: pd.DataFrame, rel_tol: float) -> pd.Series:
    """Each cell's D label (the group's smallest D) within its N: cells of one (N, D) share
    (N, label)."""
    labels = pd.Series(np.nan, index=cells.index)
    for _, members in cells.groupby("N").groups.items():
        labels[members] = group_by_tolerance(cells.loc[members, "D"].to_numpy(), rel_tol)
    return labels


def _status(cells: pd.DataFrame) -> str:
    """The status an excluded variant had: finished for runs, none for table rows."""
    return Status.FINISHED if cells["run_id"].notna().any() else ""


def select_learning_rates(
    cells: pd.DataFrame, rel_tol: float
) -> tuple[pd.DataFrame, list[Exclusion], list[LrChoice]]:
    """Keep the lowest-loss learning-rate variant of each (N, D); returns the kept cells, the
    losers as exclusions, and each (N, D)'s choice (only where more than one rate was tried)."""
    axis = _axis(cells)
    if axis is None:
        return cells, [], []
    keyed = cells.assign(d_label=_groups(cells, rel_tol))
    drop: list[int] = []
    excluded: list[Exclusion] = []
    choices: list[LrChoice] = []
    for (_, d_label), group in keyed[keyed[axis].notna()].groupby(["N", "d_label"], sort=False):
        if group[axis].nunique() < 2:
            continue
        winner = group.loc[group["loss"].idxmin()]
        choices.append(
            LrChoice(
                N=float(winner["N"]),
                D=float(d_label),
                axis=axis,
                tried=tuple(sorted(float(v) for v in group[axis].unique())),
                best=float(winner[axis]),
                cell=str(winner["cell"]),
                loss=float(winner["loss"]),
            )
        )
        for index, row in group.drop(index=winner.name).iterrows():
            drop.append(index)
            reason = (
                f"learning-rate variant not selected: {axis} {row[axis]:.4g} reached loss "
                f"{row['loss']:.4g}, {axis} {winner[axis]:.4g} reached {winner['loss']:.4g} "
                "at the same (N, D)"
            )
            excluded.append(Exclusion(str(row["cell"]), row["run_id"], _status(cells), reason))
    return cells.drop(index=drop).reset_index(drop=True), excluded, choices
