"""Upstream astroPT checkpoints load into our model and compute what upstream's model computes.

The checkpoints are built here in upstream's layout (nanoGPT's ckpt.pt: `model` under
upstream's names, `model_args`, `optimizer`, ...), with random weights; `reference` is an
independent forward pass written from upstream's architecture, on upstream's names.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from astropt.data.writers import write_shard
from astropt.patches import images_to_tokens, spiral_order
from astropt.probe.cli import main as probe_main
from astropt.probe.embed import EmbedSettings, embed
from astropt.upstream import (
    UpstreamCheckpointError,
    is_upstream_checkpoint,
    load_upstream,
    to_upstream_layout,
)

ARGS = {"n_layer": 2, "n_head": 4, "n_embd": 32, "n_chan": 3, "block_size": 20, "patch_size": 4}
PATCH_DIM = 4 * 4 * 3


def upstream_shapes(args: dict, bias: bool = False) -> dict[str, tuple[int, ...]]:
    """Every tensor of upstream's 2024 model (src/model.py) and its shape."""
    d, p = args["n_embd"], args["patch_size"] ** 2 * args["n_chan"]
    shapes = {
        "transformer.wte.0.weight": (d, p),
        "transformer.wte.0.bias": (d,),
        "transformer.wte.2.weight": (d, d),
        "transformer.wte.2.bias": (d,),
        "transformer.wpe.weight": (args["block_size"], d),
        "transformer.ln_f.weight": (d,),
        "lm_head.0.weight": (2 * d, d),
        "lm_head.0.bias": (2 * d,),
        "lm_head.2.weight": (d, 2 * d),
        "lm_head.2.bias": (d,),
        "lm_head.4.weight": (p, d),
        "lm_head.4.bias": (p,),
    }
    for i in range(args["n_layer"]):
        block = f"transformer.h.{i}."
        shapes |= {
            block + "ln_1.weight": (d,),
            block + "attn.c_attn.weight": (3 * d, d),
            block + "attn.c_proj.weight": (d, d),
            block + "ln_2.weight": (d,),
            block + "mlp.c_fc.weight": (4 * d, d),
            block + "mlp.c_proj.weight": (d, 4 * d),
        }
    if bias:
        shapes |= {k.replace(".weight", ".bias"): s for k, s in shapes.items() if len(s) == 1}
        for i in range(args["n_layer"]):
            block = f"transformer.h.{i}."
            for name, width in (("attn.c_attn", 3 * d), ("attn.c_proj", d), ("mlp.c_fc", 4 * d)):
                shapes[f"{block}{name}.bias"] = (width,)
            shapes[f"{block}mlp.c_proj.bias"] = (d,)
    return shapes


def random_state(args: dict, seed: int = 0, bias: bool = False) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in upstream_shapes(args, bias).items():
        value = torch.randn(shape, generator=generator) * 0.2
        state[name] = 1.0 + value if "ln_" in name and name.endswith("weight") else value
    return state


def save_checkpoint(path: Path, state: dict, args: dict = ARGS, prefix: str = "") -> Path:
    """A checkpoint as upstream's train.py writes it (torch.compile may prefix the keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    params = list(range(len(state)))
    torch.save(
        {
            "model": {prefix + k: v for k, v in state.items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": params}]},
            "model_args": args | {"dropout": 0.0},
            "iter_num": 30000,
            "best_val_loss": torch.tensor(0.31),
            "config": {"image_size": 224, "spiral": True, "bias": False},
        },
        path,
    )
    return path


def reference(state: dict, args: dict, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(last block's output before ln_f, predicted next patches) of upstream's model."""
    w = state
    t, d, heads = tokens.shape[1], args["n_embd"], args["n_head"]

    def linear(x, name):
        return F.linear(x, w[name + ".weight"], w.get(name + ".bias"))

    def layer_norm(x, name):
        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True, unbiased=False)
        out = (x - mean) / torch.sqrt(var + 1e-5) * w[name + ".weight"]
        return out + w[name + ".bias"] if name + ".bias" in w else out

    def gelu_tanh(x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    x = torch.relu(linear(torch.relu(linear(tokens, "transformer.wte.0")), "transformer.wte.2"))
    x = x + w["transformer.wpe.weight"][:t]
    mask = torch.ones(t, t).tril().bool()
    for i in range(args["n_layer"]):
        h = f"transformer.h.{i}."
        q, k, v = linear(layer_norm(x, h + "ln_1"), h + "attn.c_attn").split(d, dim=2)
        q, k, v = (z.view(len(x), t, heads, d // heads).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(d // heads)
        attention = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        x = x + linear(attention.transpose(1, 2).reshape(len(x), t, d), h + "attn.c_proj")
        hidden = gelu_tanh(linear(layer_norm(x, h + "ln_2"), h + "mlp.c_fc"))
        x = x + linear(hidden, h + "mlp.c_proj")
    y = layer_norm(x, "transformer.ln_f")
    y = torch.relu(linear(torch.relu(linear(y, "lm_head.0")), "lm_head.2"))
    return x, linear(y, "lm_head.4")


def images(n: int, side: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, side, side), dtype=np.uint8)


@pytest.mark.parametrize("bias", [False, True])
def test_loaded_model_computes_upstreams_function(tmp_path, bias):
    state = random_state(ARGS, bias=bias)
    path = save_checkpoint(tmp_path / "030000_ckpt.pt", state, prefix="_orig_mod.")
    model = load_upstream(path)
    cfg = model.cfg
    assert (cfg.image.image_size, cfg.patch_bias, cfg.gelu, cfg.bias) == (16, True, "tanh", bias)
    tokens = images_to_tokens(torch.from_numpy(images(5)), ARGS["patch_size"])
    hidden, predicted = reference(state, ARGS, tokens[:, :-1])
    with torch.no_grad():
        torch.testing.assert_close(model.hidden_states(tokens[:, :-1]), hidden)
        torch.testing.assert_close(model(tokens), predicted)
        torch.testing.assert_close(
            model.get_embeddings(tokens, tokens=slice(0, 8)), hidden[:, :8].mean(dim=1)
        )


def test_smaller_images_use_the_first_positions_and_too_large_ones_are_refused(tmp_path):
    state = random_state(ARGS)
    path = save_checkpoint(tmp_path / "ckpt.pt", state)
    model = load_upstream(path, image_size=8)
    tokens = images_to_tokens(torch.from_numpy(images(3, side=8)), ARGS["patch_size"])
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), reference(state, ARGS, tokens[:, :-1])[1])
    with pytest.raises(UpstreamCheckpointError, match=r"block_size \(20\) covers images of at"):
        load_upstream(path, image_size=20)
    with pytest.raises(UpstreamCheckpointError, match=r"no model for 10 x 10 images: .*multiple"):
        load_upstream(path, image_size=10)


def test_a_folder_loads_its_last_checkpoint_and_is_told_from_our_exports(tmp_path):
    folder = tmp_path / "0001M_params"
    early, late = random_state(ARGS, seed=1), random_state(ARGS, seed=2)
    save_checkpoint(folder / "005000_ckpt.pt", early)
    save_checkpoint(folder / "030000_ckpt.pt", late)
    assert is_upstream_checkpoint(folder) and is_upstream_checkpoint(folder / "005000_ckpt.pt")
    assert not is_upstream_checkpoint(tmp_path)
    weights = load_upstream(folder).state_dict()["encoder.0.weight"]
    assert torch.equal(weights, late["transformer.wte.0.weight"])


def test_mismatched_state_dicts_name_every_key(tmp_path):
    state = random_state(ARGS)
    del state["transformer.h.1.mlp.c_fc.weight"]
    state["transformer.h.0.attn.rotary.weight"] = torch.zeros(3)
    state["lm_head.4.bias"] = torch.zeros(5)
    path = save_checkpoint(tmp_path / "ckpt.pt", state)
    with pytest.raises(UpstreamCheckpointError) as error:
        load_upstream(path)
    message = str(error.value)
    assert "missing (our names): blocks.1.mlp.c_fc.weight" in message
    assert "unexpected: transformer.h.0.attn.rotary.weight" in message
    assert "wrong shape: decoder.4.bias (5,) (expected (48,))" in message
    args = {k: v for k, v in ARGS.items() if k != "n_head"}
    with pytest.raises(UpstreamCheckpointError, match="model_args lacks n_head"):
        load_upstream(save_checkpoint(tmp_path / "no_heads.pt", random_state(ARGS), args))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UpstreamCheckpointError, match=r"junk\.pt is not a readable torch"):
        load_upstream(tmp_path / "junk.pt")


def test_our_spiral_is_upstreams_and_images_convert_to_its_layout(tmp_path):
    # upstream's spiral for a 4 x 4 grid (GalaxyImageDataset._spiral(4)): centre-out, even grid
    assert spiral_order(4).tolist() == [
        [15, 14, 13, 12],
        [4, 3, 2, 11],
        [5, 0, 1, 10],
        [6, 7, 8, 9],
    ]
    ours = images(2)
    theirs = to_upstream_layout(ours)
    assert theirs[1, 0, 3, 5] == ours[1, 2, 5, 3] and theirs[0, 2, 7, 1] == ours[0, 0, 1, 7]
    state = random_state(ARGS)
    model = load_upstream(save_checkpoint(tmp_path / "ckpt.pt", state))
    settings = EmbedSettings(layout="upstream", tokens=4)
    tokens = images_to_tokens(torch.from_numpy(theirs), ARGS["patch_size"])
    hidden, _ = reference(state, ARGS, tokens[:, :-1])
    expected = hidden[:, :4].mean(dim=1).numpy()
    np.testing.assert_allclose(embed(model, ours, settings), expected, rtol=1e-5, atol=1e-6)


def test_probe_command_recognises_an_upstream_checkpoint(tmp_path, capsys):
    folder = tmp_path / "models" / "fully_trained" / "0001M_params"
    save_checkpoint(folder / "030000_ckpt.pt", random_state(ARGS))
    pixels = images(40)
    mass = pixels.reshape(40, -1).mean(axis=1) + np.random.default_rng(1).normal(0, 1, 40)
    shards = tmp_path / "val"
    write_shard(
        shards / "part-00000.parquet", [f"g{i}" for i in range(40)], pixels, "grz", {"mass": mass}
    )
    args = ["--weights", str(folder), "--data", str(shards), "--format", "json"]
    assert probe_main([*args, "--no-baselines", "--folds", "4"]) == 0
    info = json.loads(capsys.readouterr().out)["info"]
    assert info["model"] == f"upstream {folder}" and info["layout"] == "upstream"
    assert (info["images"], info["tokens"], info["n_embd"]) == (40, 15, ARGS["n_embd"])
    too_large = tmp_path / "large"
    write_shard(too_large / "part-00000.parquet", ["a"], images(1, side=32), "grz")
    assert probe_main(["--weights", str(folder), "--data", str(too_large)]) == 2
    assert "block_size (20) covers images of at most 16 pixels" in capsys.readouterr().err
