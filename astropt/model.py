"""astroPT (paper era): a causal GPT-2 that regresses the next image patch.

patches (B, T, P*P*C) -> MLP encoder -> + learned positions -> pre-LN transformer blocks
-> final LayerNorm -> MLP decoder -> predicted next patch, Huber loss (delta 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


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
    d = cfg.n_embd
    return nn.Sequential(
        nn.Linear(cfg.patch_dim, d, bias=cfg.bias),
        nn.ReLU(),
        nn.Linear(d, d, bias=cfg.bias),
        nn.ReLU(),
    )


def _patch_decoder(cfg: ModelConfig) -> nn.Sequential:
    d = cfg.n_embd
    return nn.Sequential(
        nn.Linear(d, 2 * d, bias=cfg.bias),
        nn.ReLU(),
        nn.Linear(2 * d, d, bias=cfg.bias),
        nn.ReLU(),
        nn.Linear(d, cfg.patch_dim, bias=cfg.bias),
    )


class AstroPT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = _patch_encoder(cfg)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
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

    def forward(self, sequence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict patch t+1 from patches <= t for a (B, T, P*P*C) standardised sequence.

        Returns the predictions for positions 1..T-1 and their mean Huber loss.
        """
        inputs, targets = sequence[:, :-1], sequence[:, 1:]
        predictions = self.decoder(self.ln_f(self.hidden_states(inputs)))
        return predictions, F.huber_loss(predictions, targets, delta=1.0)

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
        hidden = self.hidden_states(sequence[:, : self.cfg.block_size], upto)[:, tokens]
        if pool == "mean":
            return hidden.mean(dim=1)
        if pool == "last":
            return hidden[:, -1]
        raise ValueError(f"unknown pool {pool!r}; expected 'mean' or 'last'")


@dataclass(frozen=True)
class ParameterCount:
    total: int
    position_table: int

    @property
    def non_embedding(self) -> int:
        """Parameters without the position table: the count behind the paper's size labels."""
        return self.total - self.position_table


def count_parameters(cfg: ModelConfig) -> ParameterCount:
    """Exact parameter count from the configuration alone (no model is built)."""
    d, p, b = cfg.n_embd, cfg.patch_dim, int(cfg.bias)
    linear = lambda n_in, n_out: n_in * n_out + b * n_out
    layer_norm = d * (1 + b)
    block = 2 * layer_norm + linear(d, 3 * d) + linear(d, d) + linear(d, 4 * d) + linear(4 * d, d)
    encoder = linear(p, d) + linear(d, d)
    decoder = linear(d, 2 * d) + linear(2 * d, d) + linear(d, p)
    positions = cfg.block_size * d
    total = encoder + positions + cfg.n_layer * block + layer_norm + decoder
    return ParameterCount(total=total, position_table=positions)


def training_flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token: 6 N (non-embedding) plus the attention term 6 n_layer T d.

    Kaplan et al. 2020 (Table 1) count a forward pass as 2 N + 2 n_layer n_ctx d_attn FLOPs per
    token; a training step (forward + backward) is three times that.
    """
    n = count_parameters(cfg).non_embedding
    return 6.0 * n + 6.0 * cfg.n_layer * cfg.block_size * cfg.n_embd
