"""The sweep's MLflow parent run and its summary: a table and a loss-vs-compute plot per size."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from mlflow.tracking import MlflowClient

from astropt.tracking import log_params, set_tags

SUMMARY_COLUMNS = ["cell", "size", "N", "D", "C", "final_val_loss", "status"]


def grid_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def open_sweep_run(
    client: MlflowClient,
    experiment_id: str,
    grid_name: str,
    grid_path: Path,
    cluster: dict[str, float],
) -> str:
    """The grid's parent run, reused across re-runs and --resume (never duplicated)."""
    query = f"tags.`astropt.role` = 'sweep' and tags.`astropt.grid` = '{grid_name}'"
    found = client.search_runs([experiment_id], filter_string=query, max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        tags = {"astropt.role": "sweep", "astropt.grid": grid_name}
        run_id = client.create_run(
            experiment_id, run_name=f"sweep-{grid_name}", tags=tags
        ).info.run_id
    text = grid_path.read_text()
    log_params(
        client,
        run_id,
        {"grid_file": str(grid_path), "grid_name": grid_name}
        | {f"cluster_{k}": v for k, v in sorted(cluster.items()) if not k.startswith("node:")},
    )
    set_tags(client, run_id, {"astropt.grid_hash": grid_hash(text), "astropt.git": git_revision()})
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "grid.yaml"
        copy.write_text(text)
        client.log_artifact(run_id, str(copy))
    return run_id


def cell_table(client: MlflowClient, experiment_id: str, parent_run_id: str) -> pd.DataFrame:
    """One row per cell run under the parent: its N, D, C = 6ND, final val loss and status."""
    query = f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.`astropt.role` = 'cell'"
    rows = []
    for run in client.search_runs([experiment_id], filter_string=query, max_results=10_000):
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        n = int(params.get("n_params", 0))
        d = metrics.get("final/tokens_seen")
        rows.append(
            {
                "cell": tags.get("astropt.cell"),
                "size": params.get("preset"),
                "N": n,
                "D": d,
                "C": None if d is None else 6.0 * n * d,
                "final_val_loss": metrics.get("final/val_loss"),
                "status": tags.get("astropt.status", "unknown"),
            }
        )
    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return table.sort_values(["N", "D", "cell"], ignore_index=True)


def loss_vs_compute_plot(table: pd.DataFrame, path: Path) -> None:
    done = table[table["status"] == "finished"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for size, group in done.groupby("N"):
        group = group.sort_values("C")
        label = f"{group['size'].iloc[0]} (N={size:.3g})"
        ax.plot(group["C"], group["final_val_loss"], "o-", label=label)
    ax.set(xscale="log", xlabel="training compute C = 6ND (FLOP)", ylabel="final val loss")
    ax.set_title("loss vs compute, one line per model size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_summary(
    client: MlflowClient, experiment_id: str, parent_run_id: str, out_dir: Path
) -> pd.DataFrame:
    """summary.csv, summary.md and loss_vs_compute.png in `out_dir`, logged to the parent run."""
    table = cell_table(client, experiment_id, parent_run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "summary.csv", index=False)
    (out_dir / "summary.md").write_text(table.to_markdown(index=False, floatfmt=".4g"))
    loss_vs_compute_plot(table, out_dir / "loss_vs_compute.png")
    client.log_artifacts(parent_run_id, str(out_dir), artifact_path="summary")
    return table
