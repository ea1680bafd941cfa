"""How much of astroPT's next-patch loss on the synthetic galaxies can a model remove?

The renderer knows the noise it injects, so the irreducible part is measured directly: the same
galaxies are rendered with K noise realisations, patchified and standardised as in training;
for every value of every next patch the Huber-optimal prediction of a model that knew the
noiseless galaxy is the Huber (delta 1) location of its K noisy values, and the noise floor is
the mean Huber loss around it. In-sample the location is fitted to the values it scores
(slightly low); leave-one-out scores a realisation left out of the fit (slightly high): the
floor lies between them. Any real model also has to guess what it has not seen yet (stars,
clumps, a neighbour's position), so its irreducible loss is above this floor.

Reported beside it: the loss of predicting zeros (each standardised patch's mean), of untrained
models, and of the same models trained to ``--train-tokens`` with a plain loop on one thread
(AdamW 0.9/0.95, weight decay 0.1, clip 1, 25 warmup steps, cosine to 0.1 of each shape's
learning rate, 64-image batches, ``--train-images`` galaxies), all scored on the same 1,024
held-out galaxies. Writes ``benchmarks/results/loss_floor.json``.

    python benchmarks/loss_floor.py --size 32 --patch 8 --train-tokens 1e6
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from astropt.compute import count_parameters
from astropt.config import ModelConfig
from astropt.data import synth
from astropt.model import AstroPT
from astropt.patches import images_to_tokens
from astropt.schedule import cosine_multiplier
from astropt.train.engine import param_groups

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


def _tokens(n: int, size: int, patch: int, seed: int, start: int = 0) -> torch.Tensor:
    """Standardised patch sequences of galaxies start ... start + n - 1."""
    parts = [
        images_to_tokens(torch.from_numpy(images), patch)
        for _, images, _ in synth.iter_galaxies(start + n, size, BANDS, seed=seed)
    ]
    return torch.cat(parts)[start:]


@torch.no_grad()
def _evaluate(model: AstroPT, tokens: torch.Tensor) -> float:
    model.eval()
    losses = [model.loss(model(batch), batch[:, 1:]) * len(batch) for batch in tokens.split(256)]
    model.train()
    return float(sum(losses) / len(tokens))


def _train(model: AstroPT, train: torch.Tensor, tokens: float, lr: float) -> None:
    """Plain AdamW loop: 64-image batches cycling through one random order, cosine schedule."""
    batch = 64
    steps = int(tokens // (batch * model.cfg.image.tokens_per_image))
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=lr, betas=(0.9, 0.95))
    order = torch.randperm(len(train))
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * cosine_multiplier(step, steps, min(25, steps - 1), 0.1)
        sequences = train[order[(step * batch + torch.arange(batch)) % len(train)]]
        loss = model.loss(model(sequences), sequences[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()


def model_losses(args: argparse.Namespace) -> list[dict[str, object]]:
    """Untrained (and, with --train-tokens, trained) loss of each shape on held-out galaxies."""
    held_out = _tokens(1024, args.size, args.patch, args.seed + 1)
    train = _tokens(args.train_images, args.size, args.patch, args.seed + 2)
    rows = []
    for n_layer, n_head, n_embd, lr in args.shapes:
        cfg = ModelConfig(
            n_layer=n_layer, n_head=n_head, n_embd=n_embd, image_size=args.size,
            patch_size=args.patch,
        )  # fmt: skip
        torch.manual_seed(0)
        model = AstroPT(cfg)
        row = {"shape": cfg.name, "N": count_parameters(cfg).non_embedding, "lr": lr}
        row["untrained"] = _evaluate(model, held_out)
        if args.train_tokens:
            started = time.perf_counter()
            _train(model, train, args.train_tokens, lr)
            row |= {"trained": _evaluate(model, held_out), "train_s": time.perf_counter() - started}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _shapes(text: str) -> list[tuple[int, int, int, float]]:
    """ "L/H/D/LR,..." -> [(n_layer, n_head, n_embd, lr), ...]."""
    shapes = []
    for item in text.split(","):
        n_layer, n_head, n_embd, lr = item.split("/")
        shapes.append((int(n_layer), int(n_head), int(n_embd), float(lr)))
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--galaxies", type=int, default=128)
    parser.add_argument("--realisations", type=int, default=24)
    parser.add_argument("--leave-out", type=int, default=4, help="realisations scored held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--shapes",
        type=_shapes,
        default="1/2/24/2.4e-2,2/4/48/1e-2,3/4/96/5e-3,4/8/128/4e-3",
        help="models as n_layer/n_head/n_embd/peak learning rate, comma separated",
    )
    parser.add_argument("--train-tokens", type=float, default=0, help="0: untrained only")
    parser.add_argument("--train-images", type=int, default=48000)
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
        "train_tokens": args.train_tokens,
        "models": model_losses(args),
        "wall_s": time.perf_counter() - started,
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if "position" not in k}, indent=2))


if __name__ == "__main__":
    main()
