"""Grid files: validation errors name the key, cells are named deterministically."""

from pathlib import Path

import pytest
import yaml

from astropt.compute import count_parameters
from astropt.sweep.cells import expand as expand_with
from astropt.sweep.grid import GridError, load_grid
from astropt.sweep.run import grid_facts


def expand(grid):
    return expand_with(grid, grid_facts(grid))


REPO = Path(__file__).resolve().parents[3]

BASE = {
    "name": "t",
    "sizes": ["1M", {"name": "tiny", "n_layer": 2, "n_head": 2, "n_embd": 32}],
    "budgets": {"tokens": ["1e5", 3e5]},
    "data": {"root": "data/x"},
}


def _write(tmp_path: Path, grid: dict) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


@pytest.mark.parametrize("name", ["default.yaml", "paper.yaml"])
def test_shipped_grids_validate(name):
    grid = load_grid(REPO / "sweeps" / "grids" / name)
    assert len(expand(grid)) >= 9


def test_default_grid_gives_at_least_three_sizes_by_three_budgets():
    cells = expand(load_grid(REPO / "sweeps" / "grids" / "default.yaml"))
    assert len({c.size for c in cells}) >= 3
    assert len({c.train.tokens for c in cells}) >= 3


def test_cells_are_named_from_their_settings_and_sorted_largest_first(tmp_path):
    cells = expand(load_grid(_write(tmp_path, BASE)))
    assert len(cells) == 4
    flops = [c.compute.six_nd for c in cells]
    assert flops == sorted(flops, reverse=True)
    again = expand(load_grid(_write(tmp_path, BASE)))
    assert [c.name for c in cells] == [c.name for c in again]
    changed = expand(load_grid(_write(tmp_path, BASE | {"lr_multipliers": [2.0]})))
    assert not {c.name for c in cells} & {c.name for c in changed}


def test_adding_a_budget_keeps_the_existing_cell_names(tmp_path):
    before = {c.name for c in expand(load_grid(_write(tmp_path, BASE)))}
    more = BASE | {"budgets": {"tokens": [1e5, 3e5, 9e5]}}
    after = {c.name for c in expand(load_grid(_write(tmp_path, more)))}
    assert before < after and len(after - before) == 2


def test_tokens_per_param_and_isoflop_budgets(tmp_path):
    per_param = expand(load_grid(_write(tmp_path, BASE | {"budgets": {"tokens_per_param": [20]}})))
    for cell in per_param:
        n = count_parameters(cell.train.model).non_embedding
        assert cell.train.tokens == int(20 * n)
    iso = expand(load_grid(_write(tmp_path, BASE | {"budgets": {"isoflops": [1e12]}})))
    for cell in iso:
        assert cell.train.tokens == int(1e12 / (6 * cell.plan.n_params))


def test_a_size_with_its_own_budgets_runs_those_and_leaves_the_others_on_the_grids(tmp_path):
    own = {"name": "tiny", "n_layer": 2, "n_head": 2, "n_embd": 32, "budgets": {"tokens": [2e5]}}
    cells = expand(load_grid(_write(tmp_path, BASE | {"sizes": ["1M", own]})))
    tokens = {s: sorted(c.train.tokens for c in cells if c.size == s) for s in ("1M", "tiny")}
    assert tokens == {"1M": [100_000, 300_000], "tiny": [200_000]}


def test_data_facts_without_data_come_from_the_synthetic_spec_or_the_grid(tmp_path):
    synthetic = expand(
        load_grid(_write(tmp_path, BASE | {"data": {"synthetic": {"images": 2000}}}))
    )
    train = synthetic[0].plan.train_images
    assert 1700 < train < 1900 and synthetic[0].plan.unique_tokens == train * 15
    declared = BASE | {"data": {"root": str(tmp_path / "none"), "train_images": 5000}}
    assert expand(load_grid(_write(tmp_path, declared)))[0].plan.train_images == 5000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sizez": ["1M"]}, "sizez: unknown key"),
        ({"sizes": ["7M"]}, r"sizes\[0\]: unknown preset '7M'"),
        ({"budgets": {"tokens": [1e5], "isoflops": [1e12]}}, "exactly one of tokens"),
        ({"budgets": {"tokens": [-5]}}, "budgets.tokens.0: Input should be greater than 0"),
        ({"data": {}}, "set data.root"),
        ({"resources": {"workers": 0}}, "resources.workers: Input should be greater than 0"),
        ({"training": {"zero_stage": 4}}, "training.zero_stage"),
        (
            {"sizes": [{"name": "x", "n_layer": 2, "n_head": 3, "n_embd": 32}]},
            "divisible by n_head",
        ),
        ({"budgets": {"tokens": [10]}}, "1M at 10 tokens: tokens: the budget gives 0 optimizer"),
        ({"training": {"lr": "fastest"}}, "training.lr"),
        ({"training": {"warmup": {"fraction": 0.1, "steps": 3}}}, "exactly one of warmup"),
        ({"resources": {"by_size": {"9M": {"workers": 1}}}}, r"by_size: \['9M'\] are not sizes"),
        (
            {"sizes": [{"name": "x", "n_layer": 1, "n_head": 1, "n_embd": 8, "budgets": {}}]},
            r"sizes\.0\.budgets: give exactly one of tokens",
        ),
    ],
)
def test_bad_grids_name_the_key_and_what_was_expected(tmp_path, change, message):
    with pytest.raises(GridError, match=message):
        grid = load_grid(_write(tmp_path, BASE | change))
        expand(grid)


def test_missing_or_malformed_grid_files(tmp_path):
    with pytest.raises(GridError, match="does not exist"):
        load_grid(tmp_path / "nope.yaml")
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed")
    with pytest.raises(GridError, match="not valid YAML"):
        load_grid(path)
