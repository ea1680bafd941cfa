"""The command line end to end: a real sqlite MLflow store laid out as in docs/CONTRACTS.md, and
tables with bad input."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from astropt.fit_scaling.cli import main

# A known law with N_opt(C) = 0.099 (C/6)^0.5, so the budgets below are bracketed by the sizes.
E, A, B, ALPHA, BETA = 1.0, 50.0, 200.0, 0.3, 0.3
SIZES = (1e6, 2e6, 4e6, 8e6, 16e6)
BUDGETS = (3e15, 1e16, 3e16)
FAST = ["--bootstrap", "40", "--init-grid", "coarse"]


def law(N: float, D: float) -> float:
    return E + A / N**ALPHA + B / D**BETA


def log_cell(
    client: MlflowClient,
    sweep: tuple[str, str],
    name: str,
    status: str,
    N: float,
    D: float,
    noise: float = 0.0,
    final: bool = True,
) -> None:
    """One cell run of the sweep (experiment id, parent run id): tags, params and metrics as the
    trainer writes them; ``final=False`` leaves out the final/* metrics of a finished cell."""
    experiment_id, parent_id = sweep
    tags = {"mlflow.parentRunId": parent_id, "astropt.role": "cell", "astropt.cell": name}
    run = client.create_run(experiment_id, run_name=name, tags={**tags, "astropt.status": status})
    params = {"n_params": int(N), "n_params_total": int(1.2 * N), "tokens_budget": int(D)}
    params |= {"flops_per_token": 6 * N, "preset": name, "n_layer": 4, "n_head": 4, "n_embd": 128}
    metrics = []
    for step in range(1, 9):  # val/loss and tokens_seen at the same steps
        tokens = D * step / 8
        metrics.append(Metric("val/loss", law(N, tokens) * (1 + noise), 0, step))
        metrics.append(Metric("tokens_seen", tokens, 0, step))
    if status == "finished" and final:
        metrics.append(Metric("final/val_loss", law(N, D) * (1 + noise), 0, 8))
        metrics.append(Metric("final/tokens_seen", D, 0, 8))
    if status == "diverged":
        metrics.append(Metric("final/val_loss", float("nan"), 0, 8))
    params_logged = [Param(k, str(v)) for k, v in params.items()]
    client.log_batch(run.info.run_id, metrics=metrics, params=params_logged)
    client.set_terminated(run.info.run_id, "FAILED" if status == "failed" else "FINISHED")


def new_sweep(client: MlflowClient, root: Path, name: str) -> tuple[str, str]:
    """An experiment with its sweep parent run: (experiment id, parent run id)."""
    experiment_id = client.create_experiment(name, artifact_location=(root / name).as_uri())
    parent = client.create_run(experiment_id, run_name="sweep", tags={"astropt.role": "sweep"})
    client.set_terminated(parent.info.run_id)
    return experiment_id, parent.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Experiment "grid": a sweep whose 15 IsoFLOP cells finished, plus a diverged, a failed and
    a running cell. Experiment "all-bad": a sweep with a diverged and a failed cell and a
    finished one without final metrics. Returns the URI and each sweep's parent run id."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    rng = np.random.default_rng(0)
    grid = new_sweep(client, root, "grid")
    for c in BUDGETS:
        for n in SIZES:
            noise = rng.normal(0.0, 0.003)
            log_cell(client, grid, f"{n / 1e6:g}M-{c:.0e}", "finished", n, c / (6 * n), noise)
    log_cell(client, grid, "30M-blowup", "diverged", 3e7, 1e8)
    log_cell(client, grid, "50M-oom", "failed", 5e7, 1e8)
    log_cell(client, grid, "1M-late", "running", 1e6, 1e9)
    bad = new_sweep(client, root, "all-bad")
    log_cell(client, bad, "30M-blowup", "diverged", 3e7, 1e8)
    log_cell(client, bad, "50M-oom", "failed", 5e7, 1e8)
    log_cell(client, bad, "2M-nofinal", "finished", 2e6, 1e8, final=False)
    return {"uri": uri, "grid": grid[1], "all-bad": bad[1]}


def test_mlflow_sweep_is_fitted_and_logged_as_nested_fit_run(
    store: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["--tracking-uri", store["uri"], "--experiment", "grid", "--json", "--out", str(out)]
    assert main([*argv, *FAST, "--predict-compute", "1e17"]) == 0
    document = json.loads(capsys.readouterr().out)

    used = {c["cell"] for c in document["cells"]["used"]}
    assert len(used) == 15
    excluded = {e["cell"]: e["reason"] for e in document["cells"]["excluded"]}
    assert excluded == {
        "30M-blowup": "diverged (astropt.status = diverged)",
        "50M-oom": "failed (astropt.status = failed)",
        "1M-late": "not finished (astropt.status = running)",
    }
    report = (out / "report.txt").read_text()
    assert "Cells excluded (3)" in report
    assert "50M-oom (run " in report and "): failed (astropt.status = failed)" in report

    fit = document["parametric"]["estimates"]
    for name, true in (("E", E), ("alpha", ALPHA), ("beta", BETA)):
        assert fit[name]["lo"] <= true <= fit[name]["hi"], name
    assert document["parametric"]["compute_optimal"][0]["compute"] == 1e17
    assert len(document["isoflop"]["budgets"]) == 3
    assert abs(document["isoflop"]["a"]["value"] - 0.5) < 0.1
    assert {p["cell"] for p in document["envelope"]["points"]} <= used
    assert document["extrapolation"]["n_held_out"] == 3
    assert document["extrapolation"]["max_abs_rel_error"] < 0.05
    assert {"loss_vs_compute.png", "isoflop.png", "frontier.png", "residuals.png"} <= {
        p.name for p in out.iterdir()
    }

    client = MlflowClient(store["uri"])
    experiment_id = client.get_experiment_by_name("grid").experiment_id
    fits = client.search_runs([experiment_id], "tags.`astropt.role` = 'fit'")
    assert len(fits) == 1
    run = fits[0]
    assert run.data.tags["mlflow.parentRunId"] == store["grid"]
    assert run.info.run_name == "fit"
    assert run.data.metrics["fit/alpha"] == pytest.approx(fit["alpha"]["value"])
    assert "isoflop/a" in run.data.metrics and "extrapolation/max_abs_rel_error" in run.data.metrics
    assert run.data.tags["astropt.status"] == "finished" and run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.json", "report.txt", "frontier.png", "isoflop.png"} <= artifacts
    # The headline is on the sweep's parent run too, with the fit run's id.
    parent = client.get_run(store["grid"])
    assert parent.data.tags["astropt.fit_run"] == run.info.run_id
    for name in ("E", "A", "B", "alpha", "beta", "a"):
        assert parent.data.metrics[f"fit/{name}"] == pytest.approx(fit[name]["value"]), name
        assert parent.data.metrics[f"fit/{name}_lo"] == pytest.approx(fit[name]["lo"]), name
        assert parent.data.metrics[f"fit/{name}_hi"] == pytest.approx(fit[name]["hi"]), name
    assert parent.data.metrics["isoflop/a"] == pytest.approx(document["isoflop"]["a"]["value"])
    assert "extrapolation/mean_abs_rel_error" in parent.data.metrics
    checks = document["checks"]
    warnings = sum(c["level"] == "warning" for c in checks)
    assert parent.data.metrics["checks/warnings"] == warnings
    assert parent.data.metrics["checks/errors"] == len(checks) - warnings
    assert parent.data.tags["astropt.fit_checks"] == run.data.tags["astropt.fit_checks"]
    expected_tag = f"{len(checks) - warnings} error(s), {warnings} warning(s)" if checks else "ok"
    assert parent.data.tags["astropt.fit_checks"] == expected_tag


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI expecting bad input: exit code 2 and a one-line message, returned."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("fit_scaling: error: ")
    return err


def test_unknown_experiment(store: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    err = run_cli(["--tracking-uri", store["uri"], "--experiment", "nope"], capsys)
    assert "unknown MLflow experiment 'nope'" in err and "'grid'" in err and "'all-bad'" in err


def test_experiment_without_finished_runs(
    store: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    err = run_cli(["--tracking-uri", store["uri"], "--experiment", "all-bad"], capsys)
    assert "'all-bad'" in err and "no finished cell runs with usable results" in err
    assert "50M-oom: failed" in err and "30M-blowup: diverged" in err
    assert "2M-nofinal: finished but has no metric 'final/tokens_seen'" in err


def test_parent_run_input_without_logging(
    store: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    client = MlflowClient(store["uri"])
    experiment_id = client.get_experiment_by_name("grid").experiment_id
    runs_before = len(client.search_runs([experiment_id]))
    argv = ["--tracking-uri", store["uri"], "--parent-run", store["grid"], "--no-log"]
    assert main([*argv, "--method", "isoflop", "--bootstrap", "20"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(
        f"Scaling-law fit of MLflow experiment 'grid', sweep run {store['grid']}"
    )
    assert "IsoFLOP (Approach 2): N_opt ~ C^a, a = 0." in text
    assert "Skipped" not in text and "Parametric" not in text
    assert len(client.search_runs([experiment_id])) == runs_before


def test_unknown_parent_run(store: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    err = run_cli(["--tracking-uri", store["uri"], "--parent-run", "0" * 32], capsys)
    assert f"no MLflow run '{'0' * 32}'" in err


def test_missing_mlflow_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_cli(["--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"], capsys)
    assert f"no MLflow database at {tmp_path / 'none.db'}" in err
    assert not (tmp_path / "none.db").exists()


GOOD = {"N": [1e8, 2e8, 4e8, 8e8, 1.6e9, 1e8], "D": [1e9, 3e9, 1e10, 3e10, 1e11, 1e11]}


def write_table(tmp_path: Path, name: str = "runs.csv", **columns: list) -> Path:
    frame = pd.DataFrame({**GOOD, "loss": [4.0, 3.5, 3.1, 2.8, 2.6, 3.2], **columns})
    path = tmp_path / name
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ({"N": [1e8, 2e8, 0.0, 8e8, 1.6e9, 1e8]}, "column 'N', data row 3: expected a finite"),
        ({"D": [1e9, -5.0, 1e10, 3e10, 1e11, 1e11]}, "column 'D', data row 2: expected a finite"),
        ({"loss": [4.0, 3.5, np.nan, 2.8, 2.6, 3.2]}, "column 'loss', data row 3: .* got nan"),
        ({"loss": [4.0, 3.5, 3.0, "high", 2.6, 3.2]}, "column 'loss', data row 4: .* got 'high'"),
        (
            {"N": [1e8, 1e8, 1e8, 2e8, 2e8, 2e8], "D": [1e9, 1e9, 2e9, 1e9, 2e9, 2e9]},
            "at least 5 distinct \\(N, D\\) points .* got 4",
        ),
    ],
)
def test_bad_table_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], columns: dict, expected: str
) -> None:
    path = write_table(tmp_path, **columns)
    err = run_cli(["--table", str(path), "--method", "parametric"], capsys)
    assert str(path) in err
    assert re.search(expected, err), err


def test_missing_column_names_it_and_lists_the_available_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_table(tmp_path, "runs.parquet")
    err = run_cli(["--table", str(path), "--loss-col", "val_loss"], capsys)
    assert "missing column 'val_loss' (--loss-col)" in err
    assert "available columns: 'N', 'D', 'loss'" in err
    err = run_cli(["--table", str(path), "--d-col", "tokens"], capsys)
    assert "'tokens' (--d-col), or 'C' (--c-col)" in err


def test_table_with_compute_column_runs_selected_methods(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """D = C / (6 N) when only C is given; --method limits the work; the text report lists the
    cells used and the methods skipped with their reason."""
    n, d = np.meshgrid(SIZES, (1e8, 3e8, 1e9, 3e9))
    loss = [law(a, b) for a, b in zip(n.ravel(), d.ravel(), strict=True)]
    path = tmp_path / "grid.csv"
    pd.DataFrame({"params": n.ravel(), "flops": 6 * n.ravel() * d.ravel(), "L": loss}).to_csv(
        path, index=False
    )
    argv = ["--table", str(path), "--n-col", "params", "--c-col", "flops", "--loss-col", "L"]
    out = tmp_path / "out"
    assert main([*argv, "--method", "power-law", "--method", "envelope", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    # At fixed D the other term is a constant that adds to E; the text shows 4 digits ...
    e_at_d, e_at_n = E + B / 3e9**BETA, E + A / 16e6**ALPHA
    assert (
        f"L(N) = E + A / N^alpha at D ~ 3e+09 (5 cells): E = {e_at_d:.4g}, A = 50, alpha = 0.3"
        in text
    )
    assert (
        f"L(D) = E + B / D^beta at N ~ 1.6e+07 (4 cells): E = {e_at_n:.4g}, B = 200, beta = 0.3"
        in text
    )
    # ... and the JSON full precision, which recovers the exact law to 6 digits.
    laws = json.loads((out / "report.json").read_text())["power_laws"]
    for law_fit, e_held, coef, exponent in (
        (laws[0], e_at_d, "A", "alpha"),
        (laws[1], e_at_n, "B", "beta"),
    ):
        assert law_fit["E"] == pytest.approx(e_held, rel=1e-6)
        assert law_fit[coef] == pytest.approx({"A": A, "B": B}[coef], rel=1e-6)
        assert law_fit[exponent] == pytest.approx(0.3, rel=1e-6)
    assert "Skipped envelope: needs val/loss histories" in text
    assert "Cells used (20):" in text and "Parametric" not in text
    assert "Checks: all passed" in text.split("\n\n")[1]
    assert f"Files written (3):\n  {out / 'loss_vs_compute.png'}\n  {out / 'report.json'}" in text
