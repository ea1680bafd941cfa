"""`python -m astropt.train`: one astroPT run on one token budget, from the command line.

    python -m astropt.train --preset 1M --tokens 2e6
    python -m astropt.train --n-layer 2 --n-head 4 --n-embd 64 --tokens 1e6 --data DIR --gpu

The run is a cell of the default grid (sweeps/grids/default.yaml): its image, data, training
and resource settings, unless a flag says otherwise, so without --data it trains on the default
sweep's synthetic galaxies (generated under data/synthetic/ if missing). Every setting has a flag,
made from the configuration's own fields (astropt.config), with the grid file's checks. Values
are read as YAML: `--lr 1e-3`, `--lr table`, `--global-batch-tokens "{rule: deepseek}"`. It runs
through the sweep's machinery: progress lines, the watchdog, Ctrl-C recorded as interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

import yaml
from pydantic import BaseModel, ValidationError

from astropt.config import (
    PRESETS,
    DataConfig,
    ImageConfig,
    ResourcesConfig,
    TrackingConfig,
    TrainingConfig,
)
from astropt.sweep.cli import DEFAULT_GRID, USER_ERRORS
from astropt.sweep.grid import GridConfig, describe
from astropt.sweep.run import run_grid

#: The configuration sections that become flags, and the grid key each fills.
SECTIONS = {
    "training": TrainingConfig,
    "image": ImageConfig,
    "data": DataConfig,
    "resources": ResourcesConfig,
    "tracking": TrackingConfig,
}
ALIASES = {"--data-root": ["--data"], "--use-gpu": ["--gpu"]}
LEFT_OUT = {"data": {"train_images"}, "training": {"stall_for_test"}}


def _leaves(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple]:
    """(path, field) of every setting, nested models walked into unless the field also takes
    a plain value (a rule or a number)."""
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            yield from _leaves(kind, (*prefix, name))
        else:
            yield (*prefix, name), field


def _flag(section: str, path: tuple[str, ...]) -> str:
    words = path if section in ("training", "image", "resources") else (section, *path)
    if section == "training" and path[0] == "optim":
        words = path[1:]
    return "--" + "-".join(words).replace("_", "-")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m astropt.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = p.add_argument_group("model (a preset, or all three of --n-layer/--n-head/--n-embd)")
    model.add_argument("--preset", choices=list(PRESETS), default="1M")
    for name in ("n_layer", "n_head", "n_embd"):
        model.add_argument(f"--{name.replace('_', '-')}", type=int, help="a custom size")
    run = p.add_argument_group("run")
    run.add_argument("--tokens", required=True, help="token budget, e.g. 2e6")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--storage", default="runs/ray", help="checkpoints: a folder or s3://...")
    run.add_argument("--address", help="Ray cluster to join ('local': a fresh local one)")
    for section, model_type in SECTIONS.items():
        group = p.add_argument_group(section)
        for path, field in _leaves(model_type):
            if path[0] in LEFT_OUT.get(section, ()):
                continue
            flag = _flag(section, path)
            dest = f"{section}.{'.'.join(path)}"
            default = _lookup(
                BASE.get(section, {}), path, field.get_default(call_default_factory=True)
            )
            help_text = (field.description or "") + f" (default: {default})"
            if field.annotation is bool:
                group.add_argument(
                    flag,
                    *ALIASES.get(flag, []),
                    dest=dest,
                    action=argparse.BooleanOptionalAction,
                    help=help_text,
                )
            else:
                group.add_argument(
                    flag,
                    *ALIASES.get(flag, []),
                    dest=dest,
                    type=yaml.safe_load,
                    metavar="VALUE",
                    help=help_text,
                )
    return p


def _base() -> dict[str, dict]:
    """The default grid's own settings (as written in its file), per section."""
    return yaml.safe_load(DEFAULT_GRID.read_text())


BASE = _base()


def _lookup(tree: dict, path: tuple[str, ...], fallback: object) -> object:
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return fallback
        tree = tree[part]
    return tree


#: Settings given as a whole: a warmup is a fraction or steps, never both.
WHOLE = {"warmup"}


def _merged(base: dict, given: dict) -> dict:
    """`base` with every value `given` names replaced (nested sections merged)."""
    merged = dict(base)
    for key, value in given.items():
        if key not in WHOLE and isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merged(base[key], value)
        else:
            merged[key] = value
    return merged


def _nest(values: dict[str, object]) -> dict[str, dict]:
    """{"training.optim.schedule": x} -> {"training": {"optim": {"schedule": x}}}, given ones."""
    tree: dict[str, dict] = {}
    for dotted, value in values.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def one_cell_grid(args: argparse.Namespace) -> GridConfig:
    """The command's run as a grid of one cell (one validation of the whole configuration)."""
    given = _nest({k: v for k, v in vars(args).items() if "." in k})
    if args.n_layer or args.n_head or args.n_embd:
        size = {
            "name": f"L{args.n_layer}-H{args.n_head}-D{args.n_embd}",
            "n_layer": args.n_layer,
            "n_head": args.n_head,
            "n_embd": args.n_embd,
        }
    else:
        size = args.preset
    sections = {name: _merged(BASE.get(name, {}), given.get(name, {})) for name in SECTIONS}
    if "data" in given:  # another data set: none of the default grid's synthetic one
        sections["data"] = given["data"]
    sections["tracking"] = {"experiment": "astropt-train"} | given.get("tracking", {})
    sections["resources"] |= {"max_failures": 0}
    return GridConfig.model_validate(
        {
            "name": "train",
            "sizes": [size],
            "budgets": {"tokens": [args.tokens]},
            "seeds": [args.seed],
            "storage": args.storage,
            **sections,
        }
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        grid = one_cell_grid(args)
        return run_grid(grid, grid_path=None, address=args.address)
    except ValidationError as error:
        print(f"error: {describe(error)}", file=sys.stderr)
        return 2
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
