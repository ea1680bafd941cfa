"""astroPT (paper era): a causal GPT-2 that regresses the next image patch.

patches (B, T, P*P*C) -> MLP encoder -> + learned positions -> pre-LN transformer blocks
-> final LayerNorm -> MLP decoder -> predicted next patch, Huber loss (delta 1).
Parameter and FLOP counts are `astropt.compute`'s (from the configuration alone).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from astropt.config import ModelConfig


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.approximate = "tanh" if cfg.gelu == "tanh" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


def _patch_encoder(cfg: ModelConfig) -> nn.Sequential:
    d, bias = cfg.n_embd, cfg.patch_bias
    return nn.Sequential(
        nn.Linear(cfg.image.patch_dim, d, bias=bias),
        nn.ReLU(),
        nn.Linear(d, d, bias=bias),
        nn.ReLU(),
    )


def _patch_decoder(cfg: ModelConfig) -> nn.Sequential:
    d, bias = cfg.n_embd, cfg.patch_bias
    return nn.Sequential(
        nn.Linear(d, 2 * d, bias=bias),
        nn.ReLU(),
        nn.Linear(2 * d, d, bias=bias),
        nn.ReLU(),
        nn.Linear(d, cfg.image.patch_dim, bias=bias),
    )


class AstroPT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = _patch_encoder(cfg)
        self.wpe = nn.Embedding(cfg.image.tokens_per_image, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.decoder = _patch_decoder(cfg)
        self.apply(self._init_weights)
        # nanoGPT / GPT-2: residual projections scaled by 1/sqrt(2 n_layer).
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden_states(self, tokens: torch.Tensor, upto_layer: int | None = None) -> torch.Tensor:
        """Residual stream after block `upto_layer` (default: the last), before the final LN."""
        last = self.cfg.n_layer if upto_layer is None else upto_layer
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.encoder(tokens) + self.wpe(positions)
        for block in self.blocks[:last]:
            x = block(x)
        return x

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        """Predict patch t+1 from patches <= t for a (B, T, P*P*C) standardised sequence: the
        predictions for positions 1..T-1 (compare them with `sequence[:, 1:]` by `loss`)."""
        return self.decoder(self.ln_f(self.hidden_states(sequence[:, :-1])))

    @staticmethod
    def loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean Huber loss (delta 1) of the predicted next patches."""
        return F.huber_loss(predictions, targets, delta=1.0)

    @torch.no_grad()
    def get_embeddings(
        self,
        sequence: torch.Tensor,
        layer: int = -1,
        tokens: slice = slice(0, 64),
        pool: str = "mean",
    ) -> torch.Tensor:
        """Per-image embeddings (B, n_embd) from block `layer`'s output, pooled over `tokens`.

        The paper probes the mean of the first 64 spiral tokens of the last block before the
        final LayerNorm: `layer=-1, tokens=slice(0, 64), pool="mean"`. `layer` counts blocks
        from 1 (negative values from the end; 0 is the encoder output plus positions).
        """
        upto = layer % (self.cfg.n_layer + 1) if layer < 0 else layer
        if not 0 <= upto <= self.cfg.n_layer:
            raise ValueError(f"layer {layer} out of range for a {self.cfg.n_layer}-block model")
        last = self.cfg.image.tokens_per_image
        if tokens.stop is not None and tokens.stop >= 0:
            last = min(last, tokens.stop)  # causal: later positions cannot change pooled ones
        hidden = self.hidden_states(sequence[:, :last], upto)[:, tokens]
        if pool == "mean":
            return hidden.mean(dim=1)
        if pool == "last":
            return hidden[:, -1]
        raise ValueError(f"unknown pool {pool!r}; expected 'mean' or 'last'")
