"""The astroPT model: patches, spiral order, causality, parameter and FLOP accounting."""

import math

import pytest
import torch

from astropt.compute import count_parameters, flops_per_token
from astropt.config import PRESETS, ModelConfig
from astropt.model import AstroPT
from astropt.patches import patchify, spiral_order, standardise, unpatchify


def test_spiral_order_of_a_4x4_grid_starts_at_the_centre_and_winds_outwards():
    expected = [[15, 14, 13, 12], [4, 3, 2, 11], [5, 0, 1, 10], [6, 7, 8, 9]]
    assert spiral_order(4).tolist() == expected


@pytest.mark.parametrize("grid", [1, 2, 3, 5, 8, 32])
def test_spiral_order_visits_every_patch_once_with_unit_steps(grid):
    order = spiral_order(grid)
    assert sorted(order.ravel().tolist()) == list(range(grid * grid))
    where = {int(order[r, c]): (r, c) for r in range(grid) for c in range(grid)}
    steps = [
        abs(where[k][0] - where[k + 1][0]) + abs(where[k][1] - where[k + 1][1])
        for k in range(min(grid * grid, (grid - (grid + 1) % 2) ** 2) - 1)
    ]
    assert all(s == 1 for s in steps)


def test_patchify_round_trips_and_puts_the_centre_patch_first():
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    patches = patchify(images, 16)
    assert patches.shape == (2, 16, 16 * 16 * 3)
    assert torch.equal(unpatchify(patches, 16, 3), images)
    # Sequence position 0 is grid cell (2, 1): rows 32..47, columns 16..31, laid out (y, x, band).
    centre = images[0, :, 32:48, 16:32].permute(1, 2, 0).reshape(-1)
    assert torch.equal(patches[0, 0], centre)


def test_standardise_gives_zero_mean_unit_std_and_zeros_for_a_flat_patch():
    patches = torch.rand(3, 5, 48) * 100
    patches[1, 2] = 7.0
    out = standardise(patches)
    assert torch.isfinite(out).all()
    assert torch.equal(out[1, 2], torch.zeros(48))
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 2] = False
    assert torch.allclose(out[mask].mean(-1), torch.zeros(14), atol=1e-5)
    assert torch.allclose(out[mask].std(-1), torch.ones(14), atol=1e-4)


def test_prediction_at_t_never_depends_on_later_patches():
    torch.manual_seed(0)
    model = AstroPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, image_size=64)).eval()
    sequence = torch.randn(1, 16, 768)
    changed = sequence.clone()
    t = 6
    changed[:, t + 1 :] = torch.randn_like(changed[:, t + 1 :])
    with torch.no_grad():
        before = model(sequence)
        after = model(changed)
    # predictions[:, t] is the prediction of patch t+1 made from patches 0..t.
    assert torch.allclose(before[:, : t + 1], after[:, : t + 1], atol=1e-6)
    assert not torch.allclose(before[:, t + 1 :], after[:, t + 1 :])


def test_loss_is_huber_of_the_next_patch():
    torch.manual_seed(0)
    model = AstroPT(ModelConfig(n_layer=1, n_head=1, n_embd=16, image_size=32))
    sequence = torch.randn(2, 4, 768) * 3
    predictions = model(sequence)
    loss = AstroPT.loss(predictions, sequence[:, 1:])
    expected = torch.nn.functional.huber_loss(predictions, sequence[:, 1:], delta=1.0)
    assert predictions.shape == (2, 3, 768)
    assert torch.allclose(loss, expected)


def _hand_count(
    n_layer: int, d: int, patch_dim: int, positions: int, bias: bool, patch_bias: bool
) -> int:
    b, pb = int(bias), int(patch_bias)
    block = (
        (3 * d * d + b * 3 * d) + (d * d + b * d) + (4 * d * d + b * 4 * d) + (4 * d * d + b * d)
    )
    block += 2 * d * (1 + b)
    encoder = patch_dim * d + pb * d + d * d + pb * d
    decoder = d * 2 * d + pb * 2 * d + 2 * d * d + pb * d + d * patch_dim + pb * patch_dim
    return encoder + positions * d + n_layer * block + d * (1 + b) + decoder


@pytest.mark.parametrize(("bias", "patch_bias"), [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("preset", ["1M", "5M", "12M"])
def test_parameter_count_matches_the_built_model_and_a_hand_count(preset, bias, patch_bias):
    cfg = ModelConfig.from_preset(preset, bias=bias, patch_bias=patch_bias)
    counted = count_parameters(cfg)
    built = sum(p.numel() for p in AstroPT(cfg).parameters())
    n_layer, _, d = PRESETS[preset]
    assert counted.total == built == _hand_count(n_layer, d, 768, 15, bias, patch_bias)
    assert counted.position_table == 15 * d


LABELS = {
    "1M": 1e6,
    "5M": 5e6,
    "12M": 12e6,
    "21M": 21e6,
    "89M": 89e6,
    "309M": 309e6,
    "830M": 830e6,
    "2.1B": 2.1e9,
}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_non_embedding_counts_match_the_paper_labels(preset):
    n = count_parameters(ModelConfig.from_preset(preset, image_size=512)).non_embedding
    label = LABELS[preset]
    # From 12M up every count is within 3% of its label; the two smallest labels are the count
    # rounded to one significant figure (1M is 1.07M, 5M is 5.44M).
    if label >= 12e6:
        assert abs(n - label) / label < 0.03
    else:
        assert float(f"{n:.1g}") == label


def test_flops_per_token_is_6n_and_6n_plus_the_attention_term():
    cfg = ModelConfig.from_preset("21M", image_size=512)
    n = count_parameters(cfg).non_embedding
    per_token = flops_per_token(cfg)
    assert per_token.six_nd == 6 * n
    assert per_token.attention == 6 * n + 6 * 6 * 1023 * 512
    assert math.isclose(per_token.attention / (6 * n), 1.0, rel_tol=0.2)
    small = ModelConfig.from_preset("1M", image_size=512)
    share = flops_per_token(small).attention / flops_per_token(small).six_nd - 1
    assert 0.45 < share < 0.55  # the attention term is half of 6N for the 1M preset


def test_tanh_gelu_is_an_option_that_changes_the_output():
    torch.manual_seed(0)
    exact = AstroPT(ModelConfig(n_layer=1, n_head=2, n_embd=32, image_size=32)).eval()
    tanh = AstroPT(ModelConfig(n_layer=1, n_head=2, n_embd=32, image_size=32, gelu="tanh"))
    tanh.load_state_dict(exact.state_dict())
    sequence = torch.randn(2, 4, 768)
    with torch.no_grad():
        a, b = exact(sequence), tanh.eval()(sequence)
    assert torch.allclose(a, b, atol=1e-2) and not torch.equal(a, b)


def test_weights_exported_with_flat_image_settings_still_load():
    flat = {"n_layer": 1, "n_head": 2, "n_embd": 32, "image_size": 32, "patch_size": 8}
    cfg = ModelConfig.model_validate(flat)
    assert cfg.image.image_size == 32 and cfg.image.patch_size == 8 and cfg.image.n_chan == 3


def test_embeddings_have_the_documented_shape_and_are_deterministic():
    torch.manual_seed(0)
    model = AstroPT(ModelConfig(n_layer=3, n_head=2, n_embd=32, image_size=64)).eval()
    sequence = torch.randn(5, 16, 768)
    first = model.get_embeddings(sequence)
    assert first.shape == (5, 32)
    assert torch.equal(first, model.get_embeddings(sequence))
    assert not torch.allclose(first, model.get_embeddings(sequence, layer=1))
    with pytest.raises(ValueError, match="layer 7 out of range"):
        model.get_embeddings(sequence, layer=7)


def test_bad_model_shapes_are_named():
    with pytest.raises(ValueError, match=r"n_embd .* divisible by n_head"):
        ModelConfig(n_layer=1, n_head=3, n_embd=32)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ModelConfig(n_layer=1, n_head=1, n_embd=32, image_size=60)
    with pytest.raises(ValueError, match="unknown preset '7M'"):
        ModelConfig.from_preset("7M")
