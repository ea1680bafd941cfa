"""Which training compute drives the IsoFLOP grouping and the compute-optimal allocation.

A cell's compute is recorded two ways: C = 6 N D (N non-embedding parameters, D tokens), and with
the attention term, C = 6 N D + 6 L T d D. DeepSeek LLM 2024 (arXiv:2401.02954) measure model
scale as non-embedding FLOPs per token with the attention term for this reason: it is what the
hardware does, and at small sizes the term is tens of percent of 6 N.
The attention default is the project's choice; without an attention count for every cell the fit
falls back to 6 N D and says so.

With attention compute the FLOPs per token are 6 N r(N), r(N) = 1 + k N^-g: the attention share
falls as models widen (T / (12 d) for fixed depth-to-width shapes). k and g are fitted to the
cells' own ratios C_attention / (6 N D), so allocation and token counts hold between and beyond the
sampled sizes.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from astropt.fit_scaling.errors import FitInputError
from astropt.fit_scaling.power_law import loglog_fit
from astropt.record import Metric

KINDS = ("6nd", "attention")


@dataclass(frozen=True)
class ComputeModel:
    """FLOPs per token 6 N (1 + excess_coef N^-excess_exponent); 6 N D when excess_coef = 0."""

    kind: str = "6nd"
    excess_coef: float = 0.0
    excess_exponent: float = 0.0

    def flops_per_token(self, N: np.ndarray | float) -> np.ndarray:
        N = np.asarray(N, dtype=float)
        return 6.0 * N * (1.0 + self.excess_coef * N**-self.excess_exponent)

    def tokens(self, N: np.ndarray | float, compute: np.ndarray | float) -> np.ndarray:
        """Tokens D that ``compute`` buys a model of size N."""
        return np.asarray(compute, dtype=float) / self.flops_per_token(N)

    @property
    def expression(self) -> str:
        if self.excess_coef == 0.0:
            return "C = 6 N D"
        return f"C = 6 N D (1 + {self.excess_coef:.4g} N^-{self.excess_exponent:.4g})"

    @property
    def formula(self) -> str:
        if self.excess_coef == 0.0:
            return self.expression
        return f"{self.expression} (attention term fitted to the cells' own FLOP counts)"


@dataclass(frozen=True)
class ComputeChoice:
    requested: str | None
    model: ComputeModel
    note: str

    @property
    def used(self) -> str:
        return self.model.kind

    def to_dict(self) -> dict[str, object]:
        return {
            "requested": self.requested or "default (attention where every cell has it)",
            "used": self.used,
            "formula": self.model.formula,
            "flops_per_token_excess": {
                "coef": self.model.excess_coef,
                "exponent": self.model.excess_exponent,
            },
            "note": self.note,
        }


def _attention_model(N: np.ndarray, ratio: np.ndarray) -> ComputeModel:
    """r(N) = 1 + k N^-g through the cells' ratios (a constant excess with one size, or when an
    excess is not positive)."""
    excess = ratio - 1.0
    if np.unique(N).size >= 2 and (excess > 0).all():
        fit = loglog_fit(N, excess)
        return ComputeModel("attention", float(np.exp(fit.intercept)), -fit.slope.value)
    return ComputeModel("attention", float(excess.mean()), 0.0)


def choose_compute(
    cells: pd.DataFrame, requested: str | None
) -> tuple[pd.DataFrame, ComputeChoice]:
    """The cells with C set to the chosen compute (C_6nd filled where not recorded), and the
    choice; ``requested`` None takes attention compute when every cell has it."""
    cells = cells.copy()
    six_nd = 6.0 * cells["N"] * cells["D"]
    cells["C_6nd"] = cells["C_6nd"].fillna(six_nd)
    missing = cells["C_attention"].isna()
    if requested == "attention" and missing.any():
        names = ", ".join(cells["cell"][missing].head(5))
        raise FitInputError(
            f"--compute attention: {int(missing.sum())} cell(s) have no attention FLOP count "
            f"({names}); MLflow metric {Metric.FINAL_COMPUTE_ATTENTION!s} or table column "
            "--attention-col"
        )
    if requested == "6nd" or missing.any():
        cells["C"] = cells["C_6nd"]
        note = (
            "as requested"
            if requested == "6nd"
            else f"{int(missing.sum())} of {len(cells)} cell(s) have no attention FLOP count"
        )
        return cells, ComputeChoice(requested, ComputeModel(), note)
    cells["C"] = cells["C_attention"]
    ratio = (cells["C_attention"] / cells["C_6nd"]).to_numpy()
    model = _attention_model(cells["N"].to_numpy(), ratio)
    note = (
        f"C_attention / 6ND ranges {ratio.min():.4g}-{ratio.max():.4g} over the cells; the "
        "allocation minimises the law along C = D x FLOPs per token(N), numerically"
    )
    return cells, ComputeChoice(requested, model, note)
