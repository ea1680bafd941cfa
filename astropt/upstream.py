"""Upstream astroPT's paper-era checkpoints (Smith et al. 2024, arXiv:2405.14930) as our model.

The weights released on Hugging Face as Smith42/astroPT (`models/fully_trained/<N>M_params/
<iteration>_ckpt.pt`, one folder per size, several iterations each) are nanoGPT checkpoints:
a `torch.save`d dict with `model` (the state dict), `model_args` (n_layer, n_head, n_embd,
n_chan, block_size, patch_size, dropout), `optimizer`, `iter_num`, `best_val_loss` and
`config`. Keys may carry torch.compile's `_orig_mod.` prefix. Their model (github Smith42/
astroPT, src/model.py of 2024) names its weights, for d = n_embd and p = patch_size^2 n_chan:

    transformer.wte.0.weight (d, p), .bias (d)            patch encoder: Linear, ReLU,
    transformer.wte.2.weight (d, d), .bias (d)              Linear, ReLU (with biases)
    transformer.wpe.weight (block_size, d)                positions
    transformer.h.<i>.ln_1.weight (d)                     each block (LayerNorms and the
    transformer.h.<i>.attn.c_attn.weight (3d, d)            attention and MLP Linears carry
    transformer.h.<i>.attn.c_proj.weight (d, d)             biases only when bias=True,
    transformer.h.<i>.ln_2.weight (d)                       which the paper's runs did not
    transformer.h.<i>.mlp.c_fc.weight (4d, d)               set); GELU is the tanh
    transformer.h.<i>.mlp.c_proj.weight (d, 4d)             approximation
    transformer.ln_f.weight (d)
    lm_head.0.weight (2d, d), .bias (2d)                  patch decoder: Linear, ReLU,
    lm_head.2.weight (d, 2d), .bias (d)                     Linear, ReLU, Linear (with biases)
    lm_head.4.weight (p, d), .bias (p)

Our AstroPT has the same layers under other names; `patch_bias=True` and `gelu="tanh"` make it
compute exactly the same function. Its position table holds the positions an image needs
(patches - 1), the first rows of theirs: the spiral is nested (the first (2k)^2 positions of
any even grid cover its central 2k x 2k patches in the same order), so a model trained on
512 x 512 images embeds smaller ones with the positions it learnt for their patches.

Their inputs differ from our shards in layout: they read the Smith42/galaxies JPEGs as RGB,
which holds the bands (z, r, g), and swapped the image's axes (`swapaxes(0, 2)` of PIL's
(H, W, C) array), while our shards hold (g, r, z) in (C, H, W). `to_upstream_layout` converts
ours to theirs; their spiral (on the even patch grids of their images) and per-patch
standardisation are ours (`astropt.patches`).
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError

from astropt.config import ModelConfig
from astropt.model import AstroPT

CHECKPOINT_GLOB = "*ckpt.pt"
COMPILED_PREFIX = "_orig_mod."
REQUIRED_ARGS = ("n_layer", "n_head", "n_embd", "n_chan", "block_size", "patch_size")
#: Upstream prefix -> ours; the rest of a name is the same in both models.
RENAMES = (
    ("transformer.wte.", "encoder."),
    ("transformer.wpe.", "wpe."),
    ("transformer.h.", "blocks."),
    ("transformer.ln_f.", "ln_f."),
    ("lm_head.", "decoder."),
)
POSITIONS = "wpe.weight"
LISTED = 12  # keys spelled out per kind of mismatch


class UpstreamCheckpointError(ValueError):
    """A file that is not an upstream astroPT checkpoint, or one this model cannot hold."""


def checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """The checkpoint a path names: a file, or a folder's last `*ckpt.pt` (the highest
    iteration, as the names are zero-padded iteration numbers)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob(CHECKPOINT_GLOB))
        if not found:
            raise UpstreamCheckpointError(f"{path} holds no {CHECKPOINT_GLOB} checkpoint")
        return found[-1]
    if not path.is_file():
        raise UpstreamCheckpointError(f"{path} does not exist")
    return path


def is_upstream_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether a path names an upstream checkpoint (a `.pt` file or a folder of
    `*ckpt.pt`), rather than our exported weights."""
    path = Path(path)
    if path.is_dir():
        return any(path.glob(CHECKPOINT_GLOB))
    return path.suffix == ".pt"


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict without compile prefixes, model_args) of an upstream checkpoint. Tensors
    are memory-mapped (a 2.1B checkpoint with its optimizer is larger than most RAM) and
    nothing but tensors and plain values is unpickled (`weights_only`)."""
    file = checkpoint_file(path)
    try:
        checkpoint = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
    except (RuntimeError, OSError, ValueError, pickle.UnpicklingError) as error:
        message = " ".join(str(error).split())
        raise UpstreamCheckpointError(
            f"{file} is not a readable torch checkpoint: {message}"
        ) from None
    if not isinstance(checkpoint, dict) or not {"model", "model_args"} <= checkpoint.keys():
        held = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise UpstreamCheckpointError(
            f"{file} is not an upstream astroPT checkpoint: expected a dict with 'model' and "
            f"'model_args', found {held}"
        )
    state = {k.removeprefix(COMPILED_PREFIX): v for k, v in checkpoint["model"].items()}
    return state, dict(checkpoint["model_args"])


def upstream_config(
    state: Mapping[str, torch.Tensor], model_args: Mapping[str, object], image_size: int | None
) -> ModelConfig:
    """Our configuration of the upstream model: its shape from `model_args`, biases as its
    state dict has them, tanh GELU, and images of `image_size` (default: the largest square
    image whose patches its position table covers)."""
    missing = [k for k in REQUIRED_ARGS if k not in model_args]
    if missing:
        raise UpstreamCheckpointError(f"model_args lacks {', '.join(missing)}")
    args = {k: int(model_args[k]) for k in REQUIRED_ARGS}
    patch, block = args["patch_size"], args["block_size"]
    side = image_size or patch * math.isqrt(block + 1)
    try:
        cfg = ModelConfig(
            n_layer=args["n_layer"],
            n_head=args["n_head"],
            n_embd=args["n_embd"],
            image={"image_size": side, "patch_size": patch, "n_chan": args["n_chan"]},
            bias="transformer.ln_f.bias" in state,
            patch_bias="transformer.wte.0.bias" in state,
            gelu="tanh",
        )
    except ValidationError as error:
        reasons = "; ".join(e["msg"] for e in error.errors())
        raise UpstreamCheckpointError(f"no model for {side} x {side} images: {reasons}") from None
    if cfg.image.tokens_per_image > block:
        raise UpstreamCheckpointError(
            f"{side} x {side} images have {cfg.image.tokens_per_image + 1} patches of "
            f"{patch} x {patch}; the checkpoint's block_size ({block}) covers images of at "
            f"most {patch * math.isqrt(block + 1)} pixels"
        )
    return cfg


def _our_name(name: str) -> str | None:
    return next((ours + name[len(up) :] for up, ours in RENAMES if name.startswith(up)), None)


def _is_causal_mask(name: str, value: torch.Tensor) -> bool:
    """nanoGPT's causal-mask buffer `attn.bias` (4-D), saved only without flash attention."""
    return name.endswith(".attn.bias") and value.dim() == 4


def to_astropt_state(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """An upstream state dict under our names, checked against `expected` (our model's state
    dict): every key present, none left over, every shape equal (the position table may have
    more rows than we need; its first rows are kept)."""
    mapped: dict[str, torch.Tensor] = {}
    unexpected = []
    for name, value in state.items():
        ours = _our_name(name)
        if ours in expected:
            mapped[ours] = value
        elif not _is_causal_mask(name, value):
            unexpected.append(name)
    if POSITIONS in mapped:
        mapped[POSITIONS] = mapped[POSITIONS][: expected[POSITIONS].shape[0]]
    wrong = [
        f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})"
        for k, v in mapped.items()
        if v.shape != expected[k].shape
    ]
    missing = [k for k in expected if k not in mapped]
    problems = [
        f"{what}: {', '.join(names[:LISTED])}" + (" ..." if len(names) > LISTED else "")
        for what, names in (
            ("missing (our names)", missing),
            ("unexpected", unexpected),
            ("wrong shape", wrong),
        )
        if names
    ]
    if problems:
        raise UpstreamCheckpointError("state dict does not fit: " + "; ".join(problems))
    return {k: v.float() for k, v in mapped.items()}


def load_upstream(path: str | os.PathLike[str], image_size: int | None = None) -> AstroPT:
    """An upstream astroPT checkpoint (file, or folder of `*ckpt.pt`: its last) as an AstroPT in
    eval mode, reading `image_size` images (see `upstream_config`)."""
    state, model_args = read_checkpoint(path)
    cfg = upstream_config(state, model_args, image_size)
    model = AstroPT(cfg)
    try:
        model.load_state_dict(to_astropt_state(state, model.state_dict()))
    except UpstreamCheckpointError as error:
        raise UpstreamCheckpointError(f"{checkpoint_file(path)}: {error}") from None
    return model.eval()


def to_upstream_layout(images: np.ndarray) -> np.ndarray:
    """(n, C, H, W) images in our band order (g, r, z) as upstream read its training images:
    bands reversed to the JPEGs' RGB = (z, r, g), height and width swapped."""
    return np.ascontiguousarray(images[:, ::-1].transpose(0, 1, 3, 2))
