"""Shards, Ray storage (checkpoints) and MLflow artifacts on s3://, against a real S3 server.

The server is moto's, started on 127.0.0.1 by this module. No project code knows about it: the
one variable AWS_ENDPOINT_URL points both pyarrow (shards, Ray storage) and boto3 (MLflow
artifacts) at it, as it would at MinIO or any S3-compatible store. Ray processes inherit the
driver's environment when the driver starts the cluster, so the variables are set when this
module is imported: pytest imports every test module before any fixture (so before `ray_local`)
runs. The credentials are moto's dummies; they also keep real AWS out of reach.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import boto3
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from astropt.config import (
    DataConfig,
    ModelConfig,
    ResourcesConfig,
    TrackingConfig,
    TrainConfig,
    TrainingConfig,
)
from astropt.data.check import check_split
from astropt.data.pipeline import ImageStream, ShardFiles, streamed_batches_per_epoch
from astropt.data.schema import IMAGE_COLUMN, ShardSet, decode_images
from astropt.data.synth import generate
from astropt.model import AstroPT
from astropt.train.run import run_training
from astropt.train.trainer import check_data


def _free_port() -> int:
    """A free port below Linux's ephemeral range (32768+) and above Ray's worker ports, so that
    no outgoing connection takes it before the server starts (other modules may run first)."""
    for port in random.sample(range(30000, 32700), 300):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 30000-32699")


ENDPOINT = f"http://127.0.0.1:{_free_port()}"
os.environ.update(
    AWS_ENDPOINT_URL=ENDPOINT,
    AWS_ACCESS_KEY_ID="moto",
    AWS_SECRET_ACCESS_KEY="moto",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true",  # never ask an instance metadata service for credentials
)
BUCKET = "astropt-test"
SHAPE = (3, 64, 64)
STEPS = 10
N_IMAGES = 1200


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 holding an empty bucket; stopped by its PID."""
    port = ENDPOINT.rsplit(":", 1)[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    client = boto3.client("s3")
    deadline = time.time() + 60
    while True:
        try:
            client.create_bucket(Bucket=BUCKET)
            break
        except Exception:
            if server.poll() is not None or time.time() > deadline:
                os.killpg(server.pid, signal.SIGKILL)
                pytest.fail(f"moto server did not start on {ENDPOINT}")
            time.sleep(0.3)
    yield client
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)


def keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


@pytest.fixture(scope="module")
def s3_galaxies(s3) -> tuple[str, str]:
    """A synthetic shard set written straight to the bucket (train and val)."""
    root = f"s3://{BUCKET}/galaxies"
    generate(root, N_IMAGES, SHAPE[1], shard_size=256)
    return f"{root}/train", f"{root}/val"


def test_shards_on_s3_are_described_checked_and_read(s3, s3_galaxies, tmp_path):
    train, val = s3_galaxies
    stored = [key for key in keys(s3, "galaxies/train/") if key.endswith(".parquet")]
    shards = ShardSet(train)
    assert [f"galaxies/train/{name}" for name in shards.names] == sorted(stored)
    assert shards.image_shape == SHAPE and shards.bands == ["g", "r", "z"]
    assert shards.num_rows + ShardSet(val).num_rows == N_IMAGES
    assert check_split(train, val, expected_shape=SHAPE, deep=True) == []
    generate(str(tmp_path), N_IMAGES, SHAPE[1], shard_size=256)
    assert shards.fingerprint() == ShardSet(tmp_path / "train").fingerprint()  # same files


@pytest.mark.slow
def test_ray_data_streams_the_images_from_s3(ray_local, s3_galaxies):
    train, _ = s3_galaxies
    files = ShardFiles.of(train)
    assert all(path.startswith("s3://") for path in files.paths)
    per_epoch = streamed_batches_per_epoch(files, seed=0, epoch=0, world=1, micro=50)
    stream = ImageStream(files, SHAPE, 50, in_memory=False, seed=0, rank=0, world=1)
    images = torch.cat(list(itertools.islice(iter(stream), per_epoch))).numpy()
    expected = np.concatenate(
        [decode_images(b.column(IMAGE_COLUMN), SHAPE) for b in ShardSet(train).iter_batches()]
    )
    assert images.dtype == np.uint8 and len(images) == per_epoch * 50 > 0.9 * len(expected)
    assert {i.tobytes() for i in images} <= {i.tobytes() for i in expected}


@pytest.fixture(scope="module")
def trained_on_s3(ray_local, s3, s3_galaxies, tmp_path_factory):
    """10 steps on 2 workers with ZeRO-2: data, Ray storage and MLflow artifacts all in the
    bucket."""
    train, val = s3_galaxies
    cfg = TrainConfig(
        model=ModelConfig(n_layer=1, n_head=2, n_embd=32, image_size=SHAPE[1]),
        data=DataConfig(train=train, val=val),
        tokens=STEPS * 960,
        training=TrainingConfig(
            global_batch_tokens=960,
            eval_every=5,
            checkpoint_every=5,
            log_every=5,
            eval_batches=1,
            lr=2e-3,
            zero_stage=2,  # so that each rank stores its own optimizer shard
        ),
    )
    check_data(cfg.data, cfg.model.image)
    tracking = TrackingConfig(
        uri=f"sqlite:///{tmp_path_factory.mktemp('s3run') / 'mlflow.db'}", experiment="s3"
    )
    MlflowClient(tracking.uri).create_experiment("s3", artifact_location=f"s3://{BUCKET}/mlflow")
    outcome = run_training(
        cfg, ResourcesConfig(workers=2), tracking, name="s3-run",
        storage_path=f"s3://{BUCKET}/ray", max_failures=0,
    )  # fmt: skip
    return cfg, tracking, outcome


@pytest.mark.slow
def test_training_checkpoints_land_in_the_bucket(s3, trained_on_s3):
    _, _, outcome = trained_on_s3
    assert outcome.status == "finished" and outcome.tokens_seen == STEPS * 960
    stored = keys(s3, "ray/s3-run/")
    # ray/s3-run/<checkpoint>/astropt/...optim_states.pt: one ZeRO shard per rank; a finished
    # run keeps its last checkpoint only (step 10), complete
    shards = Counter(key.split("/")[2] for key in stored if key.endswith("optim_states.pt"))
    assert shards == {"step_000000010": 2}, stored
    assert "ray/s3-run/step_000000010/COMPLETE" in stored


@pytest.mark.slow
def test_exported_weights_land_in_the_bucket_and_load(s3, trained_on_s3, tmp_path):
    cfg, tracking, outcome = trained_on_s3
    prefix = f"mlflow/{outcome.run_id}/artifacts/model/"
    assert {f"{prefix}model.safetensors", f"{prefix}config.json"} <= set(keys(s3, prefix))
    folder = MlflowClient(tracking.uri).download_artifacts(outcome.run_id, "model", str(tmp_path))
    model = AstroPT(cfg.model)
    model.load_state_dict(load_file(Path(folder) / "model.safetensors"))
    assert all(torch.isfinite(p).all() for p in model.parameters())
