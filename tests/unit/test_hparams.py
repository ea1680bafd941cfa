"""Per-cell hyper-parameter rules: batch, learning rate, warmup, minimum steps, the lr axis."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from astropt.compute import flops_per_token
from astropt.config import ModelConfig, TrainingConfig
from astropt.hparams import UPSTREAM_LR, RuleError, resolve, table_lr
from astropt.sweep.cells import expand
from astropt.sweep.grid import GridError, load_grid
from astropt.sweep.run import grid_facts

REPO = Path(__file__).resolve().parents[2]
SMALL = ModelConfig(n_layer=2, n_head=2, n_embd=64)  # 15 tokens per image at 64 x 64


def _resolve(training: dict, budgets: list[int], world: int = 1, **extra):
    cfg = TrainingConfig.model_validate(training)
    return resolve(cfg, SMALL, cell="c", base_lr=1e-3, budgets=budgets, world_size=world, **extra)


def test_the_table_rule_gives_upstreams_rates_and_the_nearest_preset_for_custom_sizes():
    for preset, rate in UPSTREAM_LR.items():
        assert table_lr(preset, ModelConfig.from_preset(preset), None) == rate
    assert table_lr("x", SMALL, 3e-3) == 3e-3  # the size's own rate wins
    big = ModelConfig(n_layer=12, n_head=12, n_embd=744)  # nearest preset in N: 89M
    assert table_lr("x", big, None) == UPSTREAM_LR["89M"]


def test_sqrt_batch_scales_the_table_rate_with_the_square_root_of_the_batch():
    rule = {"rule": "sqrt_batch", "reference_batch_tokens": 960}
    at_reference = _resolve({"global_batch_tokens": 960, "lr": rule}, [96_000])
    assert at_reference.global_batch_tokens == 960 and at_reference.lr == pytest.approx(1e-3)
    quarter = _resolve({"global_batch_tokens": 240, "lr": rule}, [96_000])
    assert quarter.lr == pytest.approx(0.5e-3)


def test_deepseek_rules_follow_their_power_laws_of_compute():
    budget = 3_000_000
    compute = flops_per_token(SMALL).attention * budget
    choice = _resolve({"global_batch_tokens": {"rule": "deepseek"}, "lr": "deepseek"}, [budget])
    assert choice.lr == pytest.approx(0.3118 * compute**-0.1250)
    images = math.floor(0.2920 * compute**0.3271 / 15)
    assert choice.global_batch_tokens == images * 15
    capped = _resolve({"global_batch_tokens": {"rule": "deepseek", "max_tokens": 150}}, [budget])
    assert capped.global_batch_tokens == 150


def test_min_steps_shrinks_the_batch_of_short_cells_and_refuses_impossible_ones():
    choice = _resolve({"global_batch_tokens": 960, "min_steps": 100}, [30_000], world=2)
    assert choice.global_batch_tokens == 300  # 20 images: 100 steps of the 30,000 tokens
    assert 30_000 // choice.global_batch_tokens >= 100
    with pytest.raises(RuleError, match=r"c: training.min_steps 500: .* gives only 100"):
        _resolve({"min_steps": 500}, [3_000], world=2)
    allowed = _resolve({"min_steps": 500, "allow_short": True}, [3_000], world=2)
    assert allowed.global_batch_tokens == 30


def test_warmup_is_a_fraction_or_steps_capped_and_never_zero():
    assert _resolve({"warmup": {"fraction": 0.1}}, [96_000]).warmup_steps == 10
    assert _resolve({"warmup": {"steps": 7}}, [96_000]).warmup_steps == 7
    assert _resolve({"warmup": {"fraction": 0.5, "max_steps": 4}}, [96_000]).warmup_steps == 4
    assert _resolve({"warmup": {"fraction": 0.001}}, [96_000]).warmup_steps == 1
    with pytest.raises(RuleError, match="no step would run at the peak rate"):
        _resolve({"warmup": {"steps": 50}}, [9_600])


def test_branching_chooses_once_per_size_from_its_shortest_budget():
    choice = _resolve({"min_steps": 50, "warmup": {"fraction": 0.1}}, [9_600, 96_000])
    assert choice.global_batch_tokens == 180  # 12 images: 53 steps of the shortest budget
    assert choice.warmup_steps == 5  # 10% of those 53 steps


def _grid(tmp_path: Path, **changes) -> Path:
    grid = {
        "name": "t",
        "sizes": [{"name": "a", "n_layer": 1, "n_head": 2, "n_embd": 32, "lr": 2e-3}],
        "budgets": {"tokens": [9600, 19200]},
        "data": {"synthetic": {"images": 1000}},
    } | changes
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_the_lr_axis_runs_each_size_at_each_multiplier(tmp_path):
    grid = load_grid(_grid(tmp_path, lr_multipliers=[0.5, 1, 2]))
    cells = expand(grid, grid_facts(grid))
    assert len(cells) == 6
    rates = {(c.train.tokens, c.train.lr_multiplier): c.plan.lr for c in cells}
    for tokens in (9600, 19200):
        assert rates[(tokens, 0.5)] == pytest.approx(1e-3) and rates[(tokens, 2)] == 4e-3
    names = {c.name for c in cells}
    assert len(names) == 6 and sum("-lrx0.5-" in n for n in names) == 2
    assert not any("-lrx1-" in n for n in names)  # multiplier 1 keeps the names it had


def test_a_rule_that_cannot_be_met_names_the_cell_and_the_rule(tmp_path):
    path = _grid(tmp_path, training={"min_steps": 400})
    with pytest.raises(GridError, match=r"training: a at 9,600 tokens: training.min_steps 400"):
        grid = load_grid(path)
        expand(grid, grid_facts(grid))


def test_the_paper_grid_gives_every_cell_500_steps_and_upstreams_rates_at_its_batch():
    out = subprocess.run(
        [sys.executable, str(REPO / "sweeps" / "run_grid.py"),
         str(REPO / "sweeps" / "grids" / "paper.yaml"), "--dry-run", "--json"],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    runs = json.loads(out.stdout)["runs"]
    assert len(runs) == 48
    for run in runs:
        assert run["steps"] >= 500 and run["warmup_steps"] >= 1, run["name"]
        assert run["epochs"] > 0 and run["flops_attention"] > run["flops_6nd"] > 0
        if run["global_batch_tokens"] == 320 * 1023:
            assert run["lr"] == pytest.approx(UPSTREAM_LR[run["size"]])
    at_upstream_batch = {r["size"] for r in runs if r["global_batch_tokens"] == 320 * 1023}
    assert at_upstream_batch == {"89M", "309M", "830M", "2.1B"}
    assert json.loads(out.stdout)["summary"]["warnings"]  # 14 runs repeat the data
