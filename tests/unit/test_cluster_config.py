"""cluster/gpu.yaml checked offline the way `ray up` checks it, against what sweeps/grids/paper.yaml
asks of it, and with the install path that cluster/build-wheel fills.

`prepare_config` fills in the provider's defaults and `validate_config` applies Ray's JSON schema
and its cross-field rules: the two functions `ray up` runs before it calls the cloud (neither
calls AWS). What each cell asks comes from the sweep's own code (its Tune trial's resources, the
`TorchTrainer` it builds); where it goes is decided by Ray's own autoscaler scheduler (v2, what
`ray up` runs since Ray 2.50), fed the placement groups that Ray's GCS would report. The project's
own rules follow; each broken copy below must be refused.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest
import ray
import yaml
from moto import mock_aws
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.autoscaler.v2.instance_manager.config import AutoscalingConfig
from ray.autoscaler.v2.scheduler import ResourceDemandScheduler, SchedulingRequest
from ray.autoscaler.v2.schema import AutoscalerInstance
from ray.autoscaler.v2.utils import ResourceRequestUtil
from ray.core.generated.autoscaler_pb2 import GangResourceRequest
from ray.core.generated.instance_manager_pb2 import Instance, NodeKind

from astropt.cluster import TRIAL_DRIVER
from astropt.data.pipeline import ShardFiles
from astropt.sweep.cells import Cell, expand
from astropt.sweep.driver import trial_resources
from astropt.sweep.estimate import node_type
from astropt.sweep.grid import GridConfig, load_grid
from astropt.sweep.run import grid_facts
from astropt.sweep.runner import RunJob
from astropt.train.trainer import CONTROLLER_POLL, DATA_CPUS, RunData, build_trainer, worker_job

REPO = Path(__file__).resolve().parents[2]
GPU_YAML = REPO / "cluster" / "gpu.yaml"
PAPER = REPO / "sweeps" / "grids" / "paper.yaml"
BUILD_WHEEL = REPO / "cluster" / "build-wheel"


def project_problems(config: dict[str, Any]) -> list[str]:
    """What Ray does not check: explicit whole-number resources on every node type, a head
    that offers trial drivers and no GPU, GPU types that offer GPUs and no trial drivers."""
    types = config["available_node_types"]
    head = config["head_node_type"]
    problems = []
    for name, spec in types.items():
        resources = spec.get("resources") or {}
        for key in ("CPU", "GPU"):
            value = resources.get(key)
            if not isinstance(value, int) or isinstance(value, bool):
                problems.append(f"{name}: resources.{key} must be a whole number, got {value!r}")
        if name != head and (resources.get("GPU", 0) < 1 or TRIAL_DRIVER in resources):
            problems.append(f"{name}: a worker type offers GPUs and no {TRIAL_DRIVER}")
    if head in types:
        resources = types[head].get("resources") or {}
        if resources.get("GPU") != 0 or resources.get(TRIAL_DRIVER, 0) < 1:
            problems.append(f"{head}: the head offers {TRIAL_DRIVER} and GPU 0")
    return problems


def check_cluster_config(path: Path) -> dict[str, Any]:
    """Ray's checks, then the project's; the prepared config, or an exception naming the fault."""
    raw = yaml.safe_load(path.read_text())
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    problems = project_problems(raw)
    if problems:
        raise ValueError("; ".join(problems))
    return prepared


def pinned(requirement: str) -> str:
    """The version pyproject.toml pins `requirement` to (`torch` -> `2.13.0`)."""
    text = (REPO / "pyproject.toml").read_text()
    return re.search(rf'"{re.escape(requirement)}(?:\[[^\]]*\])?==([^"]+)"', text).group(1)


# --- What the paper grid's cells ask of the cluster --------------------------------------------


@dataclass(frozen=True)
class Asks:
    """What one run of a sweep that joined a cluster asks of it: its Tune trial's bundle (the
    trial drives the run; the Train controller it starts takes no resources) and its worker
    group's placement group."""

    cell: Cell
    trial: dict[str, float]
    workers: tuple[dict[str, float], ...]
    strategy: str

    @property
    def total(self) -> Counter:
        return sum((Counter(bundle) for bundle in self.workers), Counter())

    def booked_on(self, grid: GridConfig) -> str:
        """The node type the dry run books the run on (from the grid's node_types)."""
        return node_type(self.cell.resources, grid.resources)[0]


def nonzero(bundle: dict[str, float]) -> dict[str, float]:
    """A bundle as Ray schedules it: resources asked at 0 are not asked at all."""
    return {key: value for key, value in bundle.items() if value}


def asks_of(grid: GridConfig, cell: Cell, data: RunData) -> Asks:
    """The trial's resources (`astropt.sweep.driver`) and the worker group of the `TorchTrainer`
    the trial builds (`astropt.train.trainer`), on a cluster the sweep joined (no local mode)."""
    in_process = cell.resources.trains_in_process(local_cluster=False)
    job = RunJob(
        cell=cell,
        run_id="",
        data=data,
        tracking=grid.tracking,
        storage=grid.storage_path,
        max_failures=grid.resources.max_failures,
        board=None,
        in_process=in_process,
    )
    worker = worker_job(
        cell.train,
        cell.plan,
        data,
        cell.resources,
        name=cell.name,
        run_id="",
        storage_path=grid.storage_path,
        tracking_uri=grid.tracking.uri,
        tracking_wait_s=0.0,
        in_process=in_process,
    )
    scaling = build_trainer(worker, cell.resources, grid.storage_path, 0).scaling_config
    bundle = nonzero(scaling._resources_per_worker_not_none)  # what Train V2's worker group asks
    return Asks(
        cell,
        nonzero(trial_resources(job)),
        (bundle,) * scaling.num_workers,
        scaling.placement_strategy,
    )


@pytest.fixture(scope="module")
def paper() -> tuple[GridConfig, list[Asks]]:
    """paper.yaml, expanded as its dry run expands it, and what each of its runs asks."""
    grid = load_grid(PAPER)
    facts = grid_facts(grid)
    data = RunData(facts, ShardFiles(grid.data.uris()[0], (), ()))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(*CONTROLLER_POLL)  # build_trainer sets it for the process otherwise
        return grid, [asks_of(grid, cell, data) for cell in expand(grid, facts)]


def placement_problems(config: dict[str, Any], grid: GridConfig, runs: list[Asks]) -> list[str]:
    """Where the grid and the cluster disagree: the grid's node types (name, GPUs, GPU model)
    against the cluster's; the head's trial drivers against the grid's max_concurrent; each run's
    trial against the head, and its workers, with a CPU left for Ray Data, against the node type
    the dry run books it on."""
    types = config["available_node_types"]
    head = types[config["head_node_type"]]["resources"]
    problems = []
    for name, wanted in grid.resources.node_types.items():
        offered = types.get(name, {}).get("resources")
        if offered is None:
            problems.append(f"{name}: the grid's node type is not in the cluster")
            continue
        if offered.get("GPU") != wanted.gpus:
            problems.append(f"{name}: {offered.get('GPU')} GPUs, the grid says {wanted.gpus}")
        if not offered.get(f"accelerator_type:{wanted.gpu}"):
            problems.append(f"{name}: no accelerator_type:{wanted.gpu} (the grid's GPU model)")
    if head.get(TRIAL_DRIVER, 0) < grid.resources.max_concurrent:
        problems.append(
            f"head: {TRIAL_DRIVER} {head.get(TRIAL_DRIVER, 0)} < the grid's max_concurrent "
            f"{grid.resources.max_concurrent}"
        )
    for run in runs:
        size = run.cell.size
        if Counter(run.trial) - Counter(head):
            problems.append(f"size {size}: its trial asks {run.trial}, the head has {head}")
        name = run.booked_on(grid)
        offered = types.get(name, {}).get("resources", {})
        asked = run.total + Counter({"CPU": DATA_CPUS})
        if asked - Counter(offered):
            problems.append(
                f"size {size} on {name}: {len(run.workers)} workers and Ray Data ask "
                f"{dict(asked)}, the node has {offered}"
            )
    return list(dict.fromkeys(problems))


def test_the_grid_and_the_cluster_agree(paper):
    grid, runs = paper
    config = yaml.safe_load(GPU_YAML.read_text())
    assert placement_problems(config, grid, runs) == []
    booked = {run.cell.size: run.booked_on(grid) for run in runs}
    small, large = ["1M", "5M", "12M", "21M", "89M"], ["309M", "830M", "2.1B"]
    assert booked == {size: "gpu-1x" for size in small} | {size: "gpu-8x" for size in large}
    assert {len(run.workers) for run in runs if run.cell.size in small} == {1}
    assert {len(run.workers) for run in runs if run.cell.size in large} == {8}


def _more_trials_than_drivers(config: dict, grid: GridConfig) -> GridConfig:
    config["available_node_types"]["head"]["resources"][TRIAL_DRIVER] = 4
    return grid


def _no_cpu_left_for_data(config: dict, grid: GridConfig) -> GridConfig:
    config["available_node_types"]["gpu-1x"]["resources"]["CPU"] = 8
    return grid


def _other_gpu_model(config: dict, grid: GridConfig) -> GridConfig:
    resources = config["available_node_types"]["gpu-8x"]["resources"]
    resources["accelerator_type:H100"] = resources.pop("accelerator_type:A100")
    return grid


def _grid_node_type_not_in_cluster(config: dict, grid: GridConfig) -> GridConfig:
    types = dict(grid.resources.node_types)
    types["gpu-4x"] = types.pop("gpu-8x")
    return grid.model_copy(
        update={"resources": grid.resources.model_copy(update={"node_types": types})}
    )


@pytest.mark.parametrize(
    ("breaker", "message"),
    [
        (_more_trials_than_drivers, "head: trial_driver 4 < the grid's max_concurrent 8"),
        (_no_cpu_left_for_data, "size 89M on gpu-1x: 1 workers and Ray Data ask {'CPU': 9.0"),
        (_other_gpu_model, "gpu-8x: no accelerator_type:A100 (the grid's GPU model)"),
        (_grid_node_type_not_in_cluster, "gpu-4x: the grid's node type is not in the cluster"),
    ],
)
def test_a_cluster_that_does_not_fit_the_grid_is_refused(paper, breaker, message):
    grid, runs = paper
    config = yaml.safe_load(GPU_YAML.read_text())
    grid = breaker(config, grid)
    assert message in "\n".join(placement_problems(config, grid, runs))


# --- What Ray's autoscaler launches for them ---------------------------------------------------


def gang(bundles: tuple[dict[str, float], ...], strategy: str, group: str) -> GangResourceRequest:
    """A pending placement group as Ray's GCS reports it to the autoscaler
    (GenPlacementConstraintForPlacementGroup): STRICT_PACK bundles share an affinity label,
    STRICT_SPREAD ones an anti-affinity label, PACK and SPREAD ones carry none."""
    kind = {
        "STRICT_PACK": ResourceRequestUtil.PlacementConstraintType.AFFINITY,
        "STRICT_SPREAD": ResourceRequestUtil.PlacementConstraintType.ANTI_AFFINITY,
    }.get(strategy)
    constraints = None if kind is None else [(kind, f"_PG_{group}", "")]
    return GangResourceRequest(
        requests=[ResourceRequestUtil.make(bundle, constraints) for bundle in bundles]
    )


def autoscale(pending: list[Asks], idle: tuple[str, ...] = ()) -> tuple[Counter, int]:
    """One decision of Ray's autoscaler for gpu.yaml, with the head and the `idle` worker node
    types up and the `pending` runs' trials and worker groups waiting: the node types it
    launches, and how many placement groups it cannot place yet."""
    config = AutoscalingConfig(yaml.safe_load(GPU_YAML.read_text()), skip_content_hash=True)
    up = [(config.get_head_node_type(), NodeKind.HEAD)] + [(t, NodeKind.WORKER) for t in idle]
    instances = [
        AutoscalerInstance(
            im_instance=Instance(
                instance_id=f"node-{i}", instance_type=t, status=Instance.ALLOCATED, node_kind=kind
            )
        )
        for i, (t, kind) in enumerate(up)
    ]
    groups = [gang((run.trial,), "PACK", f"trial{i}") for i, run in enumerate(pending)]
    groups += [gang(run.workers, run.strategy, f"workers{i}") for i, run in enumerate(pending)]
    reply = ResourceDemandScheduler().schedule(
        SchedulingRequest(
            node_type_configs=config.get_node_type_configs(),
            max_num_nodes=config.get_max_num_nodes(),
            gang_resource_requests=groups,
            current_instances=instances,
            disable_launch_config_check=True,
        )
    )
    launched = Counter({launch.instance_type: launch.count for launch in reply.to_launch})
    return +launched, len(reply.infeasible_gang_resource_requests)


def test_the_autoscaler_launches_each_cells_node_type(paper):
    """Every cell alone on an idle cluster: its trial runs on the head, its workers get one new
    node of the type the dry run books it on."""
    grid, runs = paper
    for run in runs:
        assert autoscale([run]) == (Counter({run.booked_on(grid): 1}), 0), run.cell.name


def _wanted_when_started_together(grid: GridConfig, runs: list[Asks]) -> tuple[Counter, int]:
    """One node of its type per run, as far as each type's max_workers allows; the rest wait."""
    config = yaml.safe_load(GPU_YAML.read_text())
    asked = Counter(run.booked_on(grid) for run in runs)
    most = {name: t["max_workers"] for name, t in config["available_node_types"].items()}
    launched = Counter({name: min(n, most[name]) for name, n in asked.items()})
    return launched, sum(asked.values()) - sum(launched.values())


def test_the_sweeps_first_runs_each_get_their_node_type(paper):
    """The sweep starts max_concurrent runs at once (trunks first, largest first): three 8-GPU
    trunks and five 1-GPU trunks for paper.yaml. Each should get a node of its own type, and the
    third 8-GPU trunk wait for a gpu-8x node."""
    grid, runs = paper
    first = runs[: grid.resources.max_concurrent]
    assert autoscale(first) == _wanted_when_started_together(grid, first)


def test_a_one_gpu_cell_does_not_take_an_idle_8_gpu_node(paper):
    _, runs = paper
    small = next(run for run in runs if len(run.workers) == 1)
    assert autoscale([small], idle=("gpu-8x",)) == (Counter({"gpu-1x": 1}), 0)


# --- gpu.yaml itself ---------------------------------------------------------------------------


def test_gpu_yaml_passes_rays_validation_and_the_projects():
    prepared = check_cluster_config(GPU_YAML)
    types = prepared["available_node_types"]
    assert set(types) == {"head", "gpu-1x", "gpu-8x"}
    assert types["gpu-8x"]["resources"]["GPU"] == 8
    assert types["gpu-1x"]["node_config"]["InstanceMarketOptions"] == {"MarketType": "spot"}
    assert "InstanceMarketOptions" not in types["gpu-8x"]["node_config"]
    assert sum(t["max_workers"] for t in types.values()) <= prepared["max_workers"]


def wheel_install(config: dict[str, Any]) -> tuple[int, str, str]:
    """The setup command that installs this project's wheel from the bucket: its index, the
    Python it runs to download the wheel, and the key prefix it downloads from."""
    for index, command in enumerate(config["setup_commands"]):
        found = re.search(r'python -c "(.+?)" (\S+) &&', command)
        if found and "pip install" in command:
            return index, found.group(1), found.group(2)
    raise AssertionError("no setup command downloads and installs the wheel")


def test_gpu_yaml_pins_what_the_project_pins():
    config = yaml.safe_load(GPU_YAML.read_text())
    assert config["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert ray.__version__ == pinned("ray")
    setup = config["setup_commands"]
    torch = f"pip install -q torch=={pinned('torch')}"
    torch_at = next(i for i, command in enumerate(setup) if torch in command)
    assert torch_at < wheel_install(config)[0]
    assert not any("git+" in command for command in setup)  # the git path is a comment


def test_gpu_yaml_names_the_bucket_once_and_holds_no_credentials():
    text = GPU_YAML.read_text()
    config = yaml.safe_load(text)
    commands = [c for key, value in config.items() if key.endswith("_commands") for c in value]
    bucket = re.search(r"echo 'export ASTROPT_BUCKET=([^']+)'", text).group(1)
    assert sum(bucket in command for command in commands) == 1
    mlflow = '--artifacts-destination "s3://$ASTROPT_BUCKET/mlflow"'
    assert any(mlflow in command for command in config["head_start_ray_commands"])
    assert not re.search(r"(?i)aws_(secret_)?access_key|secret_key|AKIA[0-9A-Z]{16}", text)


def _break_unknown_key(config: dict) -> None:
    config["not_a_ray_key"] = 1


def _break_fractional_gpu(config: dict) -> None:
    config["available_node_types"]["gpu-1x"]["resources"]["GPU"] = 0.5


def _break_head_type(config: dict) -> None:
    config["head_node_type"] = "no-such-type"


def _break_head_gpu(config: dict) -> None:
    config["available_node_types"]["head"]["resources"]["GPU"] = 1


def _break_missing_resources(config: dict) -> None:
    del config["available_node_types"]["gpu-8x"]["resources"]


def _break_trial_driver_on_worker(config: dict) -> None:
    config["available_node_types"]["gpu-1x"]["resources"][TRIAL_DRIVER] = 4


@pytest.mark.parametrize(
    ("breaker", "error", "message"),
    [
        (_break_unknown_key, jsonschema.ValidationError, "'not_a_ray_key' was unexpected"),
        (_break_fractional_gpu, jsonschema.ValidationError, "0.5 is not of type 'integer'"),
        (_break_head_type, ValueError, "must be one of `available_node_types`"),
        (_break_head_gpu, ValueError, "head: the head offers trial_driver and GPU 0"),
        (_break_missing_resources, jsonschema.ValidationError, "'resources' is a required"),
        (_break_trial_driver_on_worker, ValueError, "gpu-1x: a worker type offers GPUs and no"),
    ],
)
def test_a_broken_copy_is_refused(tmp_path, breaker, error, message):
    config = yaml.safe_load(GPU_YAML.read_text())
    breaker(config)
    broken = tmp_path / "gpu.yaml"
    broken.write_text(yaml.safe_dump(config))
    with pytest.raises(error, match=re.escape(message)):
        check_cluster_config(broken)


# --- The install path: a wheel in the bucket ----------------------------------------------------


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", REPO, *args], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory) -> tuple[Path, Path]:
    """cluster/build-wheel --out at this checkout's commit (named: others may commit meanwhile):
    (the folder standing for the bucket, the wheel it built)."""
    bucket = tmp_path_factory.mktemp("bucket")
    built = subprocess.run(
        [BUILD_WHEEL, "--out", bucket, git("rev-parse", "HEAD")],
        env=os.environ | {"PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return bucket, Path(built.stdout.strip())


def test_the_wheel_holds_this_commit_of_the_project(built_wheel):
    _, wheel = built_wheel
    commit = wheel.parent.name
    assert git("rev-parse", "--verify", f"{commit}^{{commit}}") == commit
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    committed = git("ls-tree", "-r", "--name-only", commit, "astropt").split()
    assert "astropt/__init__.py" in names
    assert {name for name in committed if name.endswith(".py")} <= names
    assert f"Requires-Dist: torch=={pinned('torch')}" in metadata.decode()


def test_nodes_download_the_wheel_that_build_wheel_makes(built_wheel, tmp_path, monkeypatch):
    """The download in gpu.yaml's setup command, run as a node runs it, against an S3 emulated in
    this process (moto) that holds what cluster/build-wheel uploads: its --out folder's layout."""
    bucket, wheel = built_wheel
    _, download, prefix = wheel_install(yaml.safe_load(GPU_YAML.read_text()))
    key_prefix = prefix.replace("YOUR-REV", wheel.parent.name)
    assert key_prefix == f"{wheel.parent.relative_to(bucket).as_posix()}/"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "moto",
        "AWS_SECRET_ACCESS_KEY": "moto",
        "AWS_DEFAULT_REGION": "us-east-1",
        "ASTROPT_BUCKET": "astropt-wheels-test",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    node = tmp_path / "node"
    node.mkdir()
    monkeypatch.chdir(node)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="astropt-wheels-test")
        s3.upload_file(str(wheel), "astropt-wheels-test", wheel.relative_to(bucket).as_posix())
        monkeypatch.setattr(sys, "argv", ["-c", key_prefix])
        exec(compile(download, "gpu.yaml setup_commands", "exec"), {})
        assert [p.name for p in node.iterdir()] == [wheel.name]
        assert (node / wheel.name).read_bytes() == wheel.read_bytes()
        monkeypatch.setattr(sys, "argv", ["-c", prefix.replace("YOUR-REV", "0" * 40)])
        with pytest.raises(SystemExit, match="no wheel under s3://astropt-wheels-test/astropt/"):
            exec(compile(download, "gpu.yaml setup_commands", "exec"), {})
