"""The sweep's MLflow parent run and its summary: a table, loss vs compute, and whole curves."""

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

from astropt.record import (
    Metric,
    Param,
    Role,
    Tag,
    find_sweep_run,
    log_params,
    run_status,
    search_runs,
    set_tags,
    validation_curve,
)

SUMMARY_COLUMNS = [
    "cell",
    "size",
    "N",
    "D",
    "epochs",
    "C_6nd",
    "C_attention",
    "lr_multiplier",
    "final_val_loss",
    "status",
]
FILES = ("summary.csv", "summary.md", "loss_vs_compute.png", "curves.png")


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
    grid_text: str,
    cluster: dict[str, float],
) -> str:
    """The grid's parent run, reused across re-runs and --resume (never duplicated)."""
    run_id = find_sweep_run(client, experiment_id, grid_name)
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
    else:
        tags = {Tag.ROLE: Role.SWEEP, Tag.GRID: grid_name}
        run_id = client.create_run(
            experiment_id, run_name=f"sweep-{grid_name}", tags={str(k): v for k, v in tags.items()}
        ).info.run_id
    text = grid_text
    log_params(
        client,
        run_id,
        {Param.GRID_NAME: grid_name}
        | {f"cluster_{k}": v for k, v in sorted(cluster.items()) if not k.startswith("node:")},
    )
    set_tags(client, run_id, {Tag.GRID_HASH: grid_hash(text), Tag.GIT: git_revision()})
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "grid.yaml"
        copy.write_text(text)
        client.log_artifact(run_id, str(copy))
    return run_id


def cell_table(client: MlflowClient, experiment_id: str, parent_run_id: str) -> pd.DataFrame:
    """One row per cell run under the parent: its N, D, epochs, compute, loss and status."""
    rows = []
    for run in search_runs(client, experiment_id, Role.CELL, parent_run_id=parent_run_id):
        params, metrics = run.data.params, run.data.metrics
        status = run_status(run)
        rows.append(
            {
                "cell": run.data.tags.get(Tag.CELL),
                "size": params.get(Param.PRESET),
                "N": int(params.get(Param.N_PARAMS, 0)),
                "D": metrics.get(Metric.FINAL_TOKENS_SEEN),
                "epochs": metrics.get(Metric.FINAL_EPOCHS),
                "C_6nd": metrics.get(Metric.FINAL_COMPUTE_6ND),
                "C_attention": metrics.get(Metric.FINAL_COMPUTE_ATTENTION),
                "lr_multiplier": float(params.get(Param.LR_MULTIPLIER, 1.0)),
                "final_val_loss": metrics.get(Metric.FINAL_VAL_LOSS),
                "status": "unknown" if status is None else str(status),
                "run_id": run.info.run_id,
            }
        )
    table = pd.DataFrame(rows, columns=[*SUMMARY_COLUMNS, "run_id"])
    return table.sort_values(["N", "D", "cell"], ignore_index=True)


def loss_vs_compute_plot(table: pd.DataFrame, path: Path) -> None:
    done = table[table["status"] == "finished"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for size, group in done.groupby("N"):
        group = group.sort_values("C_6nd")
        label = f"{group['size'].iloc[0]} (N={size:.3g})"
        ax.plot(group["C_6nd"], group["final_val_loss"], "o-", label=label)
    ax.set(xscale="log", xlabel="training compute C = 6ND (FLOP)", ylabel="final val loss")
    ax.set_title("loss vs compute, one line per model size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves_plot(client: MlflowClient, table: pd.DataFrame, path: Path) -> None:
    """val/loss against tokens seen, one panel per size, every cell's whole curve (a branch's
    starts with the history it inherited from its trunk)."""
    sizes = list(dict.fromkeys(table.sort_values("N")["size"]))
    fig, axes = plt.subplots(
        1, max(1, len(sizes)), figsize=(3.2 * max(1, len(sizes)), 3.4), sharey=True, squeeze=False
    )
    for ax, size in zip(axes[0], sizes, strict=False):
        for row in table[table["size"] == size].itertuples():
            tokens, loss = validation_curve(client, row.run_id)
            ax.plot(
                tokens,
                loss,
                ".-",
                lw=1,
                ms=3,
                label=f"D={row.D:.3g}" if row.D else row.cell,
            )
        ax.set(xscale="log", title=str(size), xlabel="tokens seen")
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("val loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_summary(
    client: MlflowClient, experiment_id: str, parent_run_id: str, out_dir: Path
) -> pd.DataFrame:
    """The summary files in `out_dir`, logged to the parent run's `summary/` artifacts."""
    table = cell_table(client, experiment_id, parent_run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    shown = table.drop(columns="run_id")
    shown.to_csv(out_dir / "summary.csv", index=False)
    (out_dir / "summary.md").write_text(shown.to_markdown(index=False, floatfmt=".4g"))
    loss_vs_compute_plot(table, out_dir / "loss_vs_compute.png")
    curves_plot(client, table, out_dir / "curves.png")
    client.log_artifacts(parent_run_id, str(out_dir), artifact_path="summary")
    return table
