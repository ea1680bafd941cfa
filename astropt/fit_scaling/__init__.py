"""Scaling-law fits of astroPT sweeps: parametric L(N, D) with bootstrap intervals,
compute-optimal allocation, IsoFLOP and envelope analyses, extrapolation check.

Run ``python -m astropt.fit_scaling --help``; the pieces are importable for use in notebooks.
"""

from astropt.fit_scaling.analysis import Analysis, Settings, analyse
from astropt.fit_scaling.errors import FitInputError
from astropt.fit_scaling.parametric import BESIROGLU_GRID, COARSE_GRID, ChinchillaLaw
from astropt.fit_scaling.sources import FitData, TableColumns, load_table

__all__ = [
    "BESIROGLU_GRID",
    "COARSE_GRID",
    "Analysis",
    "ChinchillaLaw",
    "FitData",
    "FitInputError",
    "Settings",
    "TableColumns",
    "analyse",
    "load_table",
]
