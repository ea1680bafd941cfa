"""From the cells a sweep recorded to the cells the fits use: one learning rate per (N, D), the
chosen compute in C, and D as effective data where the data-constrained correction applies.
The order matters: compute is counted on the tokens actually processed, before D may be replaced
by effective data."""

from dataclasses import dataclass, replace

from astropt.fit_scaling.compute import ComputeChoice, choose_compute
from astropt.fit_scaling.lr_selection import LrChoice, select_learning_rates
from astropt.fit_scaling.repetition import Repetition, account_repetition
from astropt.fit_scaling.sources import FitData


@dataclass(frozen=True)
class Prepared:
    data: FitData
    lr_choices: tuple[LrChoice, ...]
    compute: ComputeChoice
    repetition: Repetition


def prepare(
    data: FitData, group_tol: float, compute: str | None, data_constrained: str
) -> Prepared:
    cells, lr_excluded, choices = select_learning_rates(data.cells, group_tol)
    cells, chosen = choose_compute(cells, compute)
    cells, repetition = account_repetition(cells, data_constrained)
    kept = set(cells["cell"])
    prepared = replace(
        data,
        cells=cells,
        excluded=(*data.excluded, *lr_excluded),
        curves=tuple(c for c in data.curves if c.cell in kept),
    )
    return Prepared(prepared, tuple(choices), chosen, repetition)
