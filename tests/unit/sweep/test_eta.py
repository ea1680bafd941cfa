"""The sweep's ETA against a recorded default sweep: from the first run's end on, its estimate of
the time left is within 30% of the time the sweep then took.

The record (tests/data/default_sweep_history.json, made by `benchmarks/eta_accuracy.py
--record`) holds every run of one idle default sweep in the order it ran (own tokens, FLOPs per
token, wall time, end) and the prior the sweep's calibration measured on that machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astropt.sweep.progress import Costs, Done, Estimator

HISTORY = Path(__file__).resolve().parents[2] / "data" / "default_sweep_history.json"


@pytest.fixture(scope="module")
def recorded() -> tuple[Costs, list[dict]]:
    record = json.loads(HISTORY.read_text())
    return Costs(**record["prior"]), record["runs"]


def _left(prior: Costs, runs: list[dict], done: int) -> tuple[float, float]:
    """(estimated, actual) seconds left after the first `done` runs."""
    estimator = Estimator(prior, done=[Done(r["tokens"], r["flops_per_token"], r["wall_s"])
                                      for r in runs[:done]])  # fmt: skip
    pending = {r["name"]: (r["tokens"], r["flops_per_token"]) for r in runs[done:]}
    return estimator.seconds_left(pending, {}, {}), runs[-1]["end"] - runs[done - 1]["end"]


def test_the_eta_after_the_first_run_is_within_30_percent(recorded):
    prior, runs = recorded
    assert len(runs) == 32  # the default grid: 8 trunks, 24 cells
    estimate, actual = _left(prior, runs, done=1)
    assert abs(estimate / actual - 1) <= 0.30, (estimate, actual)


def test_the_eta_stays_within_30_percent_while_most_of_the_sweep_is_left(recorded):
    """Until the last few runs (where seconds of Tune's scheduling dominate what is left)."""
    prior, runs = recorded
    for done in range(1, len(runs) // 2):
        estimate, actual = _left(prior, runs, done)
        assert abs(estimate / actual - 1) <= 0.30, (done, estimate, actual)


def test_refitting_on_the_runs_done_beats_the_prior_alone(recorded):
    """The refit is what the measured runs buy: after half the sweep, its error is smaller than
    the prior's own error on the same remaining runs."""
    prior, runs = recorded
    half = len(runs) // 2
    refitted, actual = _left(prior, runs, half)
    alone = Estimator(prior).seconds_left(
        {r["name"]: (r["tokens"], r["flops_per_token"]) for r in runs[half:]}, {}, {}
    )
    assert abs(refitted / actual - 1) <= abs(alone / actual - 1)
