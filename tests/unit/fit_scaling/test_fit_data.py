"""What the cells are before the fit: one learning rate per (N, D), repeated data as effective data
(Muennighoff et al. 2023), compute counted with or without the attention term; from tables and
from a real sqlite MLflow store."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from scipy.optimize import minimize_scalar

from astropt.fit_scaling.allocation import compute_optimal
from astropt.fit_scaling.cli import main
from astropt.fit_scaling.compute import ComputeModel
from astropt.fit_scaling.repetition import effective_data

E, A, B, ALPHA, BETA = 1.0, 50.0, 200.0, 0.3, 0.3
FAST = ["--bootstrap", "40", "--init-grid", "coarse", "--json"]
SIZES, TOKENS = (1e6, 4e6, 16e6, 64e6), (1e8, 1e9, 1e10)
MULTIPLIERS = (0.5, 1.0, 2.0)


def law(N: np.ndarray, D: np.ndarray) -> np.ndarray:
    return E + A / N**ALPHA + B / D**BETA


def best_multiplier(N: float) -> float:
    """The multiplier that trains best: 2 for the smallest size, 1 for the others."""
    return 2.0 if N < 2e6 else 1.0


def lr_grid() -> pd.DataFrame:
    """Every (N, D) at three learning-rate multipliers; a wrong rate costs 2% of loss per octave
    squared."""
    rows = []
    for n in SIZES:
        for d in TOKENS:
            for m in MULTIPLIERS:
                penalty = 1.0 + 0.02 * np.log2(m / best_multiplier(n)) ** 2
                rows.append({"N": n, "D": d, "loss": law(n, d) * penalty, "lr_mult": m})
    return pd.DataFrame(rows)


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    assert main([*argv, *FAST]) == 0
    return json.loads(capsys.readouterr().out)


def test_lr_axis_keeps_the_best_rate_per_cell_and_flags_edges(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "lr.csv"
    lr_grid().to_csv(path, index=False)
    document = run_json(["--table", str(path), "--lr-col", "lr_mult"], capsys)
    choices = document["lr_selection"]
    assert len(choices) == len(SIZES) * len(TOKENS)
    for choice in choices:
        assert choice["tried"] == list(MULTIPLIERS)
        assert choice["best"] == best_multiplier(choice["N"])
        assert choice["at_edge"] == (choice["N"] == 1e6)
    used = document["cells"]["used"]
    assert len(used) == len(SIZES) * len(TOKENS)
    assert all(row["lr"] == best_multiplier(row["N"]) for row in used)
    excluded = document["cells"]["excluded"]
    assert len(excluded) == 2 * len(SIZES) * len(TOKENS)
    assert all(e["reason"].startswith("learning-rate variant not selected: lr ") for e in excluded)
    edge = [c for c in document["checks"] if c["code"] == "lr_at_edge"]
    assert len(edge) == 1 and edge[0]["level"] == "warning"
    assert "at 3 of 12 (N, D)" in edge[0]["message"]
    assert "N = 1e+06, D = 1e+08: 2 of [0.5, 1.0, 2.0]" in edge[0]["message"]
    # The selected cells are exact points of the law, so the fit recovers it.
    fit = document["parametric"]["estimates"]
    assert fit["alpha"]["value"] == pytest.approx(ALPHA, rel=1e-4)
    assert fit["beta"]["value"] == pytest.approx(BETA, rel=1e-4)


def test_effective_data_reproduces_the_published_data_constrained_law() -> None:
    """Muennighoff et al.'s released fit (github.com/huggingface/datablations, README,
    "Parametric Fit") predicts L = 2.2256440889984477 for N = 6.34e9, D = 242e9 tokens of 25e9
    unique ones. With their coefficients and their excess-parameter term written out here, our
    effective data D' must give the same loss."""
    a, b, e, alpha, beta, rn_star = 6.255414, 7.3049974, 0.6254804, 0.3526596, 0.3526596, 5.309743
    A_, B_, E_ = np.exp(a), np.exp(b), np.exp(e)
    G = (alpha * A_ / (beta * B_)) ** (1 / (alpha + beta))
    N, D, U = 6.34e9, 242e9, 25e9
    unique_n = min(N, (U * G) ** (beta / alpha) * G)
    repeats_n = N / unique_n - 1
    N_eff = unique_n + unique_n * rn_star * (1 - np.exp(-repeats_n / rn_star))
    D_eff = effective_data(np.array([D]), np.array([D / U]))[0]
    assert E_ + A_ / N_eff**alpha + B_ / D_eff**beta == pytest.approx(2.2256440889984477, rel=1e-9)
    # Up to one epoch nothing changes; 4 epochs are worth 93% of unique data.
    assert effective_data(np.array([5.0, 5.0]), np.array([0.3, 1.0])) == pytest.approx([5.0, 5.0])
    assert effective_data(np.array([4.0]), np.array([4.0]))[0] / 4.0 == pytest.approx(
        0.9314, abs=1e-4
    )


def repeated_table(tmp_path: Path, epochs: np.ndarray) -> Path:
    N, D = (a.ravel() for a in np.meshgrid(SIZES, TOKENS))
    path = tmp_path / "epochs.csv"
    frame = pd.DataFrame({"N": N, "D": D, "loss": law(N, D), "epochs": np.resize(epochs, N.size)})
    frame.to_csv(path, index=False)
    return path


def test_cells_under_one_epoch_leave_the_fit_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = run_json(["--table", str(repeated_table(tmp_path, np.array([0.2, 0.9])))], capsys)
    repetition = document["data_repetition"]
    assert repetition["cells_repeating"] == 0 and repetition["applied"] is False
    assert "the data-constrained correction does nothing (D' = D)" in repetition["summary"]
    assert all(row["D"] == row["tokens"] for row in document["cells"]["used"])
    assert not [c for c in document["checks"] if c["code"] == "repeated_data"]


def test_repeated_cells_get_effective_data_or_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = repeated_table(tmp_path, np.array([0.5, 4.0, 16.0]))
    document = run_json(["--table", str(path)], capsys)
    repetition = document["data_repetition"]
    assert repetition["applied"] is True and repetition["mode"] == "auto"
    assert repetition["cells_repeating"] == 8 and repetition["max_epochs"] == 16.0
    for row in document["cells"]["used"]:
        expected = effective_data(np.array([row["tokens"]]), np.array([row["epochs"]]))[0]
        assert row["D"] == pytest.approx(expected)
    assert repetition["min_effective_ratio"] == pytest.approx(0.6614, abs=1e-4)
    off = run_json(["--table", str(path), "--data-constrained", "off"], capsys)
    assert off["data_repetition"]["applied"] is False
    assert all(row["D"] == row["tokens"] for row in off["cells"]["used"])
    warning = [c for c in off["checks"] if c["code"] == "repeated_data"]
    assert warning and "8 of 12 cell(s) with known epochs repeat data" in warning[0]["message"]


def test_data_constrained_on_needs_epochs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plain.csv"
    N, D = (a.ravel() for a in np.meshgrid(SIZES, TOKENS))
    pd.DataFrame({"N": N, "D": D, "loss": law(N, D)}).to_csv(path, index=False)
    assert main(["--table", str(path), "--data-constrained", "on"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fit_scaling: error: --data-constrained on: no cell has epochs")
    assert "final/epochs" in err and "--epochs-col" in err


def attention_ratio(N: np.ndarray) -> np.ndarray:
    """C_attention / 6ND of a depth-to-width family: 1 + 40 N^-(1/3)."""
    return 1.0 + 40.0 * N ** (-1.0 / 3.0)


def test_attention_compute_drives_grouping_and_allocation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    N, C = (a.ravel() for a in np.meshgrid(SIZES, (3e15, 1e16, 3e16, 1e17)))
    D = C / (6 * N * attention_ratio(N))  # each budget spent with the attention term
    path = tmp_path / "attention.csv"
    frame = pd.DataFrame({"N": N, "D": D, "loss": law(N, D), "C_attention": C})
    frame.to_csv(path, index=False)
    document = run_json(["--table", str(path), "--predict-compute", "1e18"], capsys)
    compute = document["compute"]
    assert compute["used"] == "attention"
    assert compute["flops_per_token_excess"]["coef"] == pytest.approx(40.0, rel=1e-9)
    assert compute["flops_per_token_excess"]["exponent"] == pytest.approx(1 / 3, rel=1e-9)
    assert sorted(b["budget"] for b in document["isoflop"]["budgets"]) == pytest.approx(
        [3e15, 1e16, 3e16, 1e17]
    )
    optimum = document["parametric"]["compute_optimal"][0]
    n_opt, d_opt = optimum["N_opt"]["value"], optimum["D_opt"]["value"]
    model = ComputeModel("attention", 40.0, 1 / 3)
    assert float(model.flops_per_token(n_opt)) * d_opt == pytest.approx(1e18)
    # Brute force: the fitted law along the budget is lowest at N_opt.
    fit = {k: v["value"] for k, v in document["parametric"]["estimates"].items()}

    def along(ln_n: float) -> float:
        n = np.exp(ln_n)
        d = float(model.tokens(n, 1e18))
        return fit["E"] + fit["A"] / n ** fit["alpha"] + fit["B"] / d ** fit["beta"]

    found = minimize_scalar(along, bounds=(10.0, 30.0), method="bounded", options={"xatol": 1e-9})
    assert n_opt == pytest.approx(np.exp(found.x), rel=1e-5)
    # 6ND on request: the same cells, C = 6 N D, and the closed-form allocation.
    six = run_json(["--table", str(path), "--compute", "6nd", "--predict-compute", "1e18"], capsys)
    assert six["compute"]["used"] == "6nd"
    assert [row["C"] for row in six["cells"]["used"]] == pytest.approx(
        [6 * row["N"] * row["D"] for row in six["cells"]["used"]]
    )
    params = np.array([[fit[k] for k in ("E", "A", "B", "alpha", "beta")]])
    closed = compute_optimal(params, np.array([1e18]))["N_opt"][0, 0]
    assert six["parametric"]["compute_optimal"][0]["N_opt"]["value"] == pytest.approx(
        closed, rel=1e-6
    )


def test_attention_compute_on_request_needs_the_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plain.csv"
    N, D = (a.ravel() for a in np.meshgrid(SIZES, TOKENS))
    pd.DataFrame({"N": N, "D": D, "loss": law(N, D)}).to_csv(path, index=False)
    assert main(["--table", str(path), "--compute", "attention"]) == 2
    err = capsys.readouterr().err
    assert "--compute attention: 12 cell(s) have no attention FLOP count" in err
    assert "final/compute_attention" in err and "--attention-col" in err
    document = run_json(["--table", str(path)], capsys)  # the default falls back, and says so
    assert document["compute"]["used"] == "6nd"
    assert document["compute"]["note"] == "12 of 12 cell(s) have no attention FLOP count"


def test_mlflow_cells_carry_learning_rate_epochs_and_both_computes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cells logged as the trainer logs them: the fit reads lr_multiplier, unique_tokens,
    final/epochs and both compute counts."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("lr", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(experiment, tags={"astropt.role": "sweep"}).info.run_id
    unique = 3e9
    for n in SIZES:
        for d in TOKENS:
            for m in MULTIPLIERS:
                name = f"{n:g}-{d:g}-lr{m:g}"
                tags = {"astropt.role": "cell", "astropt.cell": name, "astropt.status": "finished"}
                run = client.create_run(experiment, tags={**tags, "mlflow.parentRunId": parent})
                loss = law(n, d) * (1.0 + 0.02 * np.log2(m / best_multiplier(n)) ** 2)
                flops = 6 * n * d
                metrics = {
                    "final/val_loss": loss,
                    "final/tokens_seen": d,
                    "final/epochs": d / unique,
                    "final/compute_6nd": flops,
                    "final/compute_attention": flops * attention_ratio(np.array(n)),
                }
                params = {
                    "n_params": int(n),
                    "lr_multiplier": m,
                    "lr": 1e-3 * m,
                    "unique_tokens": unique,
                }
                client.log_batch(
                    run.info.run_id,
                    metrics=[Metric(k, float(v), 0, 1) for k, v in metrics.items()],
                    params=[Param(k, str(v)) for k, v in params.items()],
                )
    argv = ["--tracking-uri", uri, "--experiment", "lr", "--no-log", "--data-constrained", "off"]
    document = run_json(argv, capsys)
    assert len(document["lr_selection"]) == 12
    assert {c["axis"] for c in document["lr_selection"]} == {"lr_multiplier"}
    assert all(c["best"] == best_multiplier(c["N"]) for c in document["lr_selection"])
    assert document["compute"]["used"] == "attention"
    assert document["compute"]["flops_per_token_excess"]["coef"] == pytest.approx(40.0)
    repetition = document["data_repetition"]
    assert repetition["cells_with_epochs"] == 12 and repetition["cells_repeating"] == 4
    assert repetition["max_epochs"] == pytest.approx(1e10 / unique)
    used = document["cells"]["used"]
    assert {row["unique_tokens"] for row in used} == {unique}
    assert all(row["lr"] == pytest.approx(1e-3 * row["lr_multiplier"]) for row in used)
