"""Parameter and FLOP accounting from a configuration alone (no model is built, no torch).

Training compute is recorded two ways, because scaling-law papers use both:

- C = 6 N D (Kaplan et al. 2020; Hoffmann et al. 2022), N non-embedding parameters;
- C = (6 N + 6 n_layer T d) D, adding the attention score and value products (Kaplan et al. 2020,
  Table 1; DeepSeek LLM 2024 argue for this "non-embedding FLOPs per token" as the model scale).

For astroPT's short sequences (T = patches per image - 1) the attention term is large for small
models (half of 6N for the 1M preset at 64 x 64), so the choice moves the frontier's exponent.
"""

from __future__ import annotations

from dataclasses import dataclass

from astropt.config import ModelConfig

#: Dense bf16 peak FLOP/s by GPU name (vendor datasheets), for MFU and cost estimates.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "A10G": 70e12, "L4": 121e12}


@dataclass(frozen=True)
class ParameterCount:
    total: int
    position_table: int

    @property
    def non_embedding(self) -> int:
        """Parameters without the position table: the count behind the paper's size labels."""
        return self.total - self.position_table


def count_parameters(cfg: ModelConfig) -> ParameterCount:
    """Exact parameter count of `astropt.model.AstroPT(cfg)`."""
    d, p = cfg.n_embd, cfg.image.patch_dim
    linear = lambda n_in, n_out, bias: n_in * n_out + int(bias) * n_out
    layer_norm = d * (1 + int(cfg.bias))
    block = (
        2 * layer_norm
        + linear(d, 3 * d, cfg.bias)
        + linear(d, d, cfg.bias)
        + linear(d, 4 * d, cfg.bias)
        + linear(4 * d, d, cfg.bias)
    )
    encoder = linear(p, d, cfg.patch_bias) + linear(d, d, cfg.patch_bias)
    decoder = (
        linear(d, 2 * d, cfg.patch_bias)
        + linear(2 * d, d, cfg.patch_bias)
        + linear(d, p, cfg.patch_bias)
    )
    positions = cfg.image.tokens_per_image * d
    total = encoder + positions + cfg.n_layer * block + layer_norm + decoder
    return ParameterCount(total=total, position_table=positions)


@dataclass(frozen=True)
class Compute:
    """Training FLOPs of `tokens` tokens, both ways."""

    six_nd: float
    attention: float


def flops_per_token(cfg: ModelConfig) -> Compute:
    """Training FLOPs per token: 6 N, and 6 N + 6 n_layer T d (forward + backward = 3 x the
    forward's 2 N + 2 n_layer n_ctx d; Kaplan et al. 2020, Table 1)."""
    six_n = 6.0 * count_parameters(cfg).non_embedding
    attention = 6.0 * cfg.n_layer * cfg.image.tokens_per_image * cfg.n_embd
    return Compute(six_nd=six_n, attention=six_n + attention)


def training_compute(cfg: ModelConfig, tokens: float) -> Compute:
    per_token = flops_per_token(cfg)
    return Compute(six_nd=per_token.six_nd * tokens, attention=per_token.attention * tokens)


def peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak of a GPU by its name, None for devices not in the table."""
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in device_name), None)
