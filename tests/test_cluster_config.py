"""cluster/gpu.yaml checked offline the way `ray up` checks it, plus what this project needs of it.

`prepare_config` fills in the provider's defaults and `validate_config` applies Ray's JSON schema
and its cross-field rules: the two functions `ray up` runs before it calls the cloud (neither
calls AWS). The project's own rules follow; each broken copy below must be refused.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from astropt.cluster import TRIAL_DRIVER

REPO = Path(__file__).resolve().parents[1]
GPU_YAML = REPO / "cluster" / "gpu.yaml"


def project_problems(config: dict[str, Any]) -> list[str]:
    """What Ray does not check: explicit whole-number resources on every node type, a head
    that offers trial drivers and no GPU, GPU types that offer GPUs and no trial drivers."""
    types = config["available_node_types"]
    head = config["head_node_type"]
    problems = []
    for name, node_type in types.items():
        resources = node_type.get("resources") or {}
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


def test_gpu_yaml_passes_rays_validation_and_the_projects():
    prepared = check_cluster_config(GPU_YAML)
    types = prepared["available_node_types"]
    assert set(types) == {"head", "gpu-1x", "gpu-8x"}
    assert types["gpu-8x"]["resources"]["GPU"] == 8
    assert types["gpu-1x"]["node_config"]["InstanceMarketOptions"] == {"MarketType": "spot"}
    assert "InstanceMarketOptions" not in types["gpu-8x"]["node_config"]
    assert sum(t["max_workers"] for t in types.values()) <= prepared["max_workers"]


def test_gpu_yaml_pins_what_the_project_pins():
    config = yaml.safe_load(GPU_YAML.read_text())
    assert config["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert ray.__version__ == pinned("ray")
    setup = config["setup_commands"]
    torch_at = next(i for i, c in enumerate(setup) if f"torch=={pinned('torch')}" in c)
    package_at = next(i for i, c in enumerate(setup) if "astropt-sweeps @ git+" in c)
    assert torch_at < package_at


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
