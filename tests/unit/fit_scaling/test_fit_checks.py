"""The fit checks itself: a degenerate table is flagged, first in the text and in the JSON; healthy
data (a known law with small noise, the Chinchilla runs) is not."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_fit_reference import chinchilla_runs

from astropt.fit_scaling import COARSE_GRID, Settings, analyse
from astropt.fit_scaling.cli import main
from astropt.fit_scaling.sources import FitData, cells_frame

FAST = ["--bootstrap", "200", "--init-grid", "coarse"]


def table(tmp_path: Path, N: np.ndarray, D: np.ndarray, loss: np.ndarray) -> Path:
    path = tmp_path / "runs.csv"
    pd.DataFrame({"N": N, "D": D, "loss": loss}).to_csv(path, index=False)
    return path


def flat_in_n(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3 sizes x 3 token counts of a loss that depends on D only (plus 0.6 % noise): the shape
    of a small sweep whose sizes do not matter, so alpha has nothing to measure."""
    rng = np.random.default_rng(seed)
    N = np.repeat([1.2e6, 4.9e6, 1.2e7], 3)
    D = np.tile([2e7, 6e7, 2e8], 3)
    return N, D, 0.30 + 2.0 / D**0.25 + rng.normal(0.0, 0.002, 9)


def known_law(n_sizes: int = 5, noise: float = 0.005) -> tuple[np.ndarray, ...]:
    """A 5 x 5 grid spanning 100x in N and 1000x in D of L = 1 + 50/N^0.3 + 200/D^0.3."""
    N, D = (
        a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e8, n_sizes), np.geomspace(1e7, 1e10, 5))
    )
    loss = (1.0 + 50.0 / N**0.3 + 200.0 / D**0.3) * np.exp(
        np.random.default_rng(3).normal(0.0, noise, N.size)
    )
    return N, D, loss


def test_degenerate_table_is_flagged_first_and_drawn_as_such(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = table(tmp_path, *flat_in_n())
    out = tmp_path / "out"
    assert main(["--table", str(path), "--out", str(out), *FAST]) == 0
    text = capsys.readouterr().out
    sections = text.split("\n\n")
    assert sections[0] == f"Scaling-law fit of {path}"
    assert sections[1].startswith("Checks: 1 error(s), ")
    assert "do not quote its numbers" in sections[1]
    assert "ERROR [exponent_range] alpha = " in sections[1]
    document = json.loads((out / "report.json").read_text())
    assert next(iter(document)) == "checks"
    codes = {(c["level"], c["code"]) for c in document["checks"]}
    assert ("error", "exponent_range") in codes
    assert ("warning", "wide_interval") in codes
    assert ("warning", "bootstrap_failures") in codes
    failures = document["parametric"]["bootstrap"]["failures"]
    count = failures["fewer than 5 distinct (N, D) points"]
    assert 0 < count < 200
    messages = [c["message"] for c in document["checks"]]
    assert (
        f"{count} of 200 parametric bootstrap resamples had fewer than 5 distinct (N, D) points"
        in messages
    )
    alpha = document["parametric"]["estimates"]["alpha"]["value"]
    assert f"alpha = {alpha:.4g} is outside" in text
    # No number in the text carries more than 4 significant digits.
    decimals = re.findall(r"(?<![\w.])-?(\d+\.\d+)(?:e[+-]\d+)?", text.replace(str(tmp_path), ""))
    assert decimals and all(len(d.replace(".", "").lstrip("0")) <= 4 for d in decimals), decimals


def test_healthy_known_law_passes_every_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = table(tmp_path, *known_law())
    assert main(["--table", str(path), "--json", *FAST]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["checks"] == []
    assert main(["--table", str(path), *FAST]) == 0
    assert capsys.readouterr().out.split("\n\n")[1].startswith("Checks: all passed")


def test_chinchilla_runs_pass_every_check() -> None:
    N, D, loss = chinchilla_runs()
    data = FitData("chinchilla", cells_frame([f"r{i}" for i in range(N.size)], N, D, loss))
    settings = Settings(
        methods=("parametric", "power-law", "extrapolation"), n_bootstrap=200, init_grid=COARSE_GRID
    )
    analysis = analyse(data, settings)
    assert analysis.checks == [], analysis.checks


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        (
            (1e6, 2e6, 4e6),
            "3 distinct model sizes spanning 4x: a power law in N needs at least 3 spanning 10x",
        ),
        (
            (1e6, 1e8),
            "2 distinct model sizes spanning 100x: a power law in N needs at least 3 spanning 10x",
        ),
    ],
)
def test_too_few_or_too_close_sizes_are_flagged(sizes: tuple[float, ...], expected: str) -> None:
    N, D = (a.ravel() for a in np.meshgrid(sizes, np.geomspace(1e7, 1e10, 5)))
    loss = 1.0 + 50.0 / N**0.3 + 200.0 / D**0.3
    data = FitData("t", cells_frame([f"c{i}" for i in range(N.size)], N, D, loss))
    settings = Settings(methods=("power-law",), n_bootstrap=20, init_grid=COARSE_GRID)
    checks = analyse(data, settings).checks
    assert [(c.level, c.code, c.message) for c in checks] == [("warning", "coverage", expected)]


def test_disagreeing_approaches_are_flagged() -> None:
    """A loss surface not of the law's form: at each budget a parabola in ln N whose minimum
    moves as C^0.8. The IsoFLOP exponent is 0.8 exactly; the misspecified parametric law puts a
    elsewhere, and the two intervals do not overlap."""
    N, C = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 64e6, 7), (1e15, 1e16, 1e17, 1e18)))
    shift = np.log(N) - 0.8 * np.log(C / 1e16) - np.log(8e6)
    loss = 2.0 + 0.05 * shift**2 + 0.3 * (C / 1e16) ** -0.1
    data = FitData("t", cells_frame([f"c{i}" for i in range(N.size)], N, C / (6 * N), loss))
    settings = Settings(methods=("parametric", "isoflop"), n_bootstrap=100, init_grid=COARSE_GRID)
    analysis = analyse(data, settings)
    assert analysis.isoflop is not None and analysis.parametric is not None
    assert analysis.isoflop.exponent.value == pytest.approx(0.8)
    disagree = [c for c in analysis.checks if c.code == "approaches_disagree"]
    assert len(disagree) == 1 and disagree[0].level == "warning"
    a = analysis.parametric.estimates["a"]
    assert disagree[0].message == (
        "the allocation exponent a disagrees beyond its 95% intervals (parametric vs IsoFLOP): "
        f"parametric {a.value:.4g} [{a.lo:.4g}, {a.hi:.4g}], IsoFLOP 0.8 [0.8, 0.8]"
    )


def test_small_losses_are_bracketed_by_the_starts() -> None:
    """astroPT's losses are ~0.3, below the published grid's smallest E (exp(-1) = 0.37): the
    start grid reaches down to them, so a healthy fit at that scale passes every check."""
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e6, 1e8, 5), np.geomspace(1e7, 1e10, 5)))
    loss = 0.25 + 2.0 / N**0.3 + 8.0 / D**0.3
    noisy = loss * np.exp(np.random.default_rng(5).normal(0.0, 0.003, N.size))
    data = FitData("astro scale", cells_frame([f"c{i}" for i in range(N.size)], N, D, noisy))
    settings = Settings(methods=("parametric",), n_bootstrap=200, init_grid=COARSE_GRID)
    analysis = analyse(data, settings)
    assert analysis.parametric is not None
    assert min(analysis.parametric.model.start_axes_["e"]) < np.log(0.25)
    assert abs(analysis.parametric.model.E_ - 0.25) < 0.025
    assert analysis.checks == []
