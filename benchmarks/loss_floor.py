"""How much of astroPT's next-patch loss on the synthetic galaxies can a model remove?

The renderer knows the noise it injects, so the irreducible part is measured directly: the same
galaxies are rendered with K noise realisations, patchified and standardised as in training;
for every value of every next patch the Huber-optimal prediction of a model that knew the
noiseless galaxy is the Huber (delta 1) location of its K noisy values, and the noise floor is
the mean Huber loss around it. In-sample the location is fitted to the values it scores
(slightly low); leave-one-out scores a realisation left out of the fit (slightly high): the
floor lies between them. Any real model also has to guess what it has not seen yet (stars,
clumps, a neighbour's position), so its irreducible loss is above this floor.

Reported beside it: the loss of predicting zeros (each standardised patch's mean) and of
untrained models. Writes ``benchmarks/results/loss_floor.json``.

    python benchmarks/loss_floor.py --size 32 --patch 8
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from astropt.config import ModelConfig
from astropt.data import synth
from astropt.model import AstroPT, count_parameters
from astropt.patches import images_to_tokens

RESULTS = Path(__file__).parent / "results" / "loss_floor.json"
BANDS = ("g", "r", "z")


def huber_location(values: torch.Tensor, iterations: int = 30) -> torch.Tensor:
    """Per-element Huber (delta 1) location over dim 0, by iteratively reweighted means."""
    location = values.median(dim=0).values
    for _ in range(iterations):
        residual = values - location
        inside = (residual.abs() < 1).sum(0).clamp(min=1)
        location = location + residual.clamp(-1, 1).sum(0) / inside
    return location


def next_patch_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Huber loss per (..., position) over next-patch positions 1..T-1."""
    loss = F.huber_loss(predicted, target, delta=1.0, reduction="none").mean(-1)
    return loss[..., 1:]


def realisations(n: int, size: int, patch: int, k: int, seed: int) -> torch.Tensor:
    """(K, n, T, P*P*C) standardised patch sequences of the same n galaxies, K noise draws."""
    params = synth.draw_parameters(np.random.default_rng(seed), n, size)
    draws = []
    for i in range(k):
        images = synth.render(params, size, BANDS, np.random.default_rng([seed, i]))
        draws.append(images_to_tokens(torch.from_numpy(images), patch))
    return torch.stack(draws)


def noise_floor(tokens: torch.Tensor, leave_out: int) -> dict[str, object]:
    """In-sample and leave-one-out floors, and the loss of predicting zeros."""
    in_sample = next_patch_loss(huber_location(tokens).expand_as(tokens), tokens)
    held_out = torch.stack(
        [
            next_patch_loss(huber_location(torch.cat([tokens[:j], tokens[j + 1 :]])), tokens[j])
            for j in range(leave_out)
        ]
    )
    zeros = next_patch_loss(torch.zeros_like(tokens), tokens)
    return {
        "floor_in_sample": float(in_sample.mean()),
        "floor_leave_one_out": float(held_out.mean()),
        "zero_prediction": float(zeros.mean()),
        "floor_in_sample_by_position": in_sample.mean((0, 1)).tolist(),
        "zero_prediction_by_position": zeros.mean((0, 1)).tolist(),
    }


def untrained_losses(
    shapes: list[tuple[int, int, int]], size: int, patch: int, n: int, seed: int
) -> list[dict[str, object]]:
    """Loss of freshly initialised models (seed 0) on n galaxies not used for the floor."""
    _, images, _ = next(synth.iter_galaxies(n, size, BANDS, seed=seed + 1))
    tokens = images_to_tokens(torch.from_numpy(images), patch)
    rows = []
    for n_layer, n_head, n_embd in shapes:
        cfg = ModelConfig(
            n_layer=n_layer, n_head=n_head, n_embd=n_embd, image_size=size, patch_size=patch
        )
        torch.manual_seed(0)
        with torch.no_grad():
            _, loss = AstroPT(cfg).eval()(tokens)
        rows.append(
            {"shape": cfg.name, "N": count_parameters(cfg).non_embedding, "loss": float(loss)}
        )
    return rows


def _shapes(text: str) -> list[tuple[int, int, int]]:
    return [tuple(int(v) for v in item.split("/")) for item in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--galaxies", type=int, default=128)
    parser.add_argument("--realisations", type=int, default=24)
    parser.add_argument("--leave-out", type=int, default=4, help="realisations scored held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--shapes", default="1/2/24,2/4/48,4/8/128", help="untrained models, n_layer/n_head/n_embd"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    tokens = realisations(args.galaxies, args.size, args.patch, args.realisations, args.seed)
    result = {
        "generator_version": synth.GENERATOR_VERSION,
        "size": args.size,
        "patch": args.patch,
        "galaxies": args.galaxies,
        "realisations": args.realisations,
        **noise_floor(tokens, args.leave_out),
        "untrained": untrained_losses(_shapes(args.shapes), args.size, args.patch, 1024, args.seed),
        "wall_s": time.perf_counter() - started,
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if "position" not in k}, indent=2))


if __name__ == "__main__":
    main()
