"""Probing one model end to end: read the data, embed, cross-validate, write, log to MLflow."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from astropt.model import AstroPT
from astropt.probe.baselines import feature_sets
from astropt.probe.data import (
    ProbeData,
    numeric_columns,
    open_shards,
    read_probe_data,
    require_columns,
)
from astropt.probe.embed import EmbedSettings, check_images
from astropt.probe.embedding_map import PROJECTIONS, embedding_map
from astropt.probe.errors import ProbeInputError
from astropt.probe.probes import cross_validate, is_constant, prepare_target
from astropt.probe.report import ProbeRow, ProbeTable, to_csv, to_json, to_markdown, to_text
from astropt.probe.weights import run_source, tracking_client
from astropt.record import MAX_BATCH, MetricPoint, Param, ProbeName, Tag, set_tags

DEFAULT_MAP_COLOUR = "mag_r"
TABLE_FORMATS = {"txt": to_text, "md": to_markdown, "csv": to_csv, "json": to_json}
MAP_FILE = "embedding_map.png"
OUTPUT_FILES = (*(f"probe_table.{suffix}" for suffix in TABLE_FORMATS), MAP_FILE)


@dataclass(frozen=True)
class ProbeOptions:
    """How to probe; the defaults follow the astroPT paper's linear probes."""

    folds: int = 5
    embed: EmbedSettings = field(default_factory=EmbedSettings)
    mad_cut: float = 5.0  # outliers: further than this many robust sigmas from the median
    seed: int = 0  # CV folds and the map's projection
    baselines: bool = True
    map_colour: str | None = None  # default: mag_r, else the first numeric target or column
    map_method: str = "umap"

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ProbeInputError(f"folds must be at least 2, got {self.folds}")
        if self.mad_cut <= 0:
            raise ProbeInputError(f"mad_cut must be positive, got {self.mad_cut}")
        if self.map_method not in PROJECTIONS:
            raise ProbeInputError(
                f"unknown map projection {self.map_method!r}; expected one of "
                f"{', '.join(PROJECTIONS)}"
            )


def _map_colour(options: ProbeOptions, numeric: list[str], targets: list[str]) -> str:
    """The chosen colour column, else mag_r, else the first numeric target or column."""
    if options.map_colour:
        if options.map_colour not in numeric:
            raise ProbeInputError(
                f"map colour {options.map_colour!r} is not a numeric metadata column; "
                f"numeric columns: {', '.join(numeric) or 'none'}"
            )
        return options.map_colour
    found = next((c for c in [DEFAULT_MAP_COLOUR, *targets, *numeric] if c in numeric), None)
    if found is None:
        raise ProbeInputError("no numeric metadata column to colour the embedding map by")
    return found


def _load(
    model: AstroPT,
    data_uri: str,
    targets: Sequence[str] | None,
    max_images: int | None,
    options: ProbeOptions,
) -> tuple[ProbeData, list[str], str]:
    """The probe data, the target names and the map's colour column, all checked."""
    if max_images is not None and max_images < 1:
        raise ProbeInputError(f"max_images must be at least 1, got {max_images}")
    shards = open_shards(data_uri)
    names = list(targets) if targets else numeric_columns(shards)
    if not names:
        raise ProbeInputError(f"{shards.uri} has no numeric metadata columns; name the targets")
    require_columns(shards, names, "target")
    if options.map_colour is not None:
        require_columns(shards, [options.map_colour], "map colour")
    numeric = numeric_columns(shards)
    colour = _map_colour(options, numeric, names)
    data = read_probe_data(shards, list(dict.fromkeys([*names, colour])), max_images)
    check_images(model.cfg, data.images, data.uri)
    return data, names, colour


def probe_model(
    model: AstroPT,
    data_uri: str,
    targets: Sequence[str] | None = None,
    max_images: int | None = None,
    options: ProbeOptions | None = None,
    out_dir: Path | None = None,
    init_seed: int = 0,
    source: str = "",
) -> ProbeTable:
    """Probe a model's embeddings (and the baselines) on every target of a shard set.

    `targets` default to all numeric metadata columns that vary. `init_seed` seeds the untrained
    baseline (the trained run's seed gives its exact initial weights). With `out_dir`, the
    table (txt, md, csv, json) and the embedding map (PNG) are written there.
    """
    options = options or ProbeOptions()
    data, names, colour = _load(model, data_uri, targets, max_images, options)
    if not targets:  # by default, columns constant over the probed rows are left out, not errors
        names = [n for n in names if not is_constant(data.metadata[n])]
        if not names:
            raise ProbeInputError(
                f"every numeric column of {data.uri} is constant; nothing to probe"
            )
    prepared = [prepare_target(n, data.metadata[n], options.folds, options.mad_cut) for n in names]
    features = feature_sets(model, data.images, options.embed, init_seed, options.baselines)
    rows = [
        ProbeRow(
            t.name,
            t.kind,
            name,
            len(t.rows),
            t.n_dropped,
            cross_validate(values, t, options.folds, options.seed),
        )
        for t in prepared
        for name, values in features.items()
    ]
    table = ProbeTable(rows, _info(model, source, data, options))
    if out_dir is not None:
        values = pd.to_numeric(data.metadata[colour], errors="coerce").to_numpy(float)
        write_outputs(table, features, values, colour, out_dir, options)
    return table


def _info(model: AstroPT, source: str, data: ProbeData, options: ProbeOptions) -> dict[str, object]:
    embed = options.embed
    return {
        "model": source or model.cfg.name,
        "n_embd": model.cfg.n_embd,
        "data": data.uri,
        "images": len(data.images),
        "folds": options.folds,
        "layer": embed.layer,
        "tokens": min(embed.tokens, model.cfg.image.tokens_per_image),
        "pool": embed.pool,
        "layout": embed.layout,
        "map": options.map_method,
        "mad_cut": options.mad_cut,
        "seed": options.seed,
    }


def write_outputs(
    table: ProbeTable,
    features: dict[str, np.ndarray],
    colour: np.ndarray,
    colour_name: str,
    out_dir: Path,
    options: ProbeOptions,
) -> None:
    """The files of OUTPUT_FILES in `out_dir`: the table in each format, the embedding map."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for suffix, render in TABLE_FORMATS.items():
        (out_dir / f"probe_table.{suffix}").write_text(render(table))
    picture = out_dir / MAP_FILE
    embedding_map(features, colour, colour_name, picture, options.map_method, options.seed)


def log_probe(client: MlflowClient, run_id: str, table: ProbeTable, files: Sequence[Path]) -> None:
    """Metrics `probe/<target>/<metric>` etc., the settings as tags, the files as artifacts."""
    metrics = [MetricPoint(k, v, 0, 0) for k, v in table.mlflow_metrics().items() if np.isfinite(v)]
    for start in range(0, len(metrics), MAX_BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + MAX_BATCH])
    set_tags(client, run_id, {f"{Tag.PROBE}.{k}": v for k, v in table.info.items()})
    for path in files:
        client.log_artifact(run_id, str(path), ProbeName.ARTIFACTS)


def probe_run(
    tracking_uri: str,
    run_id: str,
    data_uri: str | None = None,
    targets: Sequence[str] | None = None,
    max_images: int | None = None,
    options: ProbeOptions | None = None,
    out_dir: Path | None = None,
    log: bool = True,
) -> ProbeTable:
    """Probe a finished cell run's exported model and (with `log`) record the results in it.

    The weights are the run's `model/` artifacts; `data_uri` defaults to the run's validation
    set (param `data_val`); the untrained baseline uses the run's `seed`. Logs the metrics
    `probe/<target>/<metric>` and `.../<metric>_std` (fold spread) for the model,
    `probe_baseline/<features>/<target>/<metric>` for the baselines, tags `astropt.probe.*`
    and the artifacts `probe/` (the table in four formats and the embedding map).
    """
    client = tracking_client(tracking_uri)
    source = run_source(client, run_id)
    data_uri = data_uri or source.data_uri
    if not data_uri:
        raise ProbeInputError(f"run {run_id} records no {Param.DATA_VAL} param; give the data")
    with tempfile.TemporaryDirectory() as scratch:
        folder = out_dir or Path(scratch)
        table = probe_model(
            source.model,
            data_uri,
            targets,
            max_images,
            options,
            folder,
            init_seed=source.init_seed,
            source=source.description,
        )
        if log:
            log_probe(client, run_id, table, [folder / name for name in OUTPUT_FILES])
    return table
