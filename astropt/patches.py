"""Images to patch sequences: spiral order from the centre outwards, per-patch standardisation.

A patch's values are laid out (row, column, band), so a patch vector of length P*P*C holds P*P
pixels of C bands each. The sequence visits the patch grid in a spiral that starts at the centre
(for even grids the cell just below-left of the centre) and turns right, up, left, down with leg
lengths 1, 1, 2, 2, 3, 3, ...
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

EPS = 1e-8


@cache
def spiral_order(grid: int) -> np.ndarray:
    """Order index of each cell of a grid x grid patch grid (0 = centre, first in the sequence)."""
    order = np.full((grid, grid), -1, dtype=np.int64)
    row, col = grid // 2, (grid - 1) // 2
    moves = [(0, 1), (-1, 0), (0, -1), (1, 0)]  # right, up, left, down
    index, leg, turn = 0, 1, 0
    while index < grid * grid:
        for _ in range(2):
            d_row, d_col = moves[turn % 4]
            for _ in range(leg):
                if 0 <= row < grid and 0 <= col < grid:
                    order[row, col] = index
                    index += 1
                row, col = row + d_row, col + d_col
            turn += 1
        leg += 1
    order.flags.writeable = False
    return order


@cache
def _raster_of_sequence(grid: int) -> torch.Tensor:
    """For sequence position k, the raster index (row * grid + col) of its patch."""
    return torch.from_numpy(np.argsort(spiral_order(grid).ravel()))


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) images -> (B, T, P*P*C) patches in spiral order (dtype preserved)."""
    b, c, h, w = images.shape
    p = patch_size
    grid = h // p
    if h != w or h % p:
        raise ValueError(f"images must be square multiples of {p}, got {h}x{w}")
    x = images.reshape(b, c, grid, p, grid, p).permute(0, 2, 4, 3, 5, 1)
    x = x.reshape(b, grid * grid, p * p * c)
    return x[:, _raster_of_sequence(grid).to(x.device)]


def unpatchify(patches: torch.Tensor, patch_size: int, n_chan: int) -> torch.Tensor:
    """Inverse of `patchify`: (B, T, P*P*C) spiral-ordered patches -> (B, C, H, W)."""
    b, t, _ = patches.shape
    p = patch_size
    grid = round(t**0.5)
    raster = torch.empty_like(patches)
    raster[:, _raster_of_sequence(grid).to(patches.device)] = patches
    x = raster.reshape(b, grid, grid, p, p, n_chan).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, n_chan, grid * p, grid * p)


def standardise(patches: torch.Tensor) -> torch.Tensor:
    """Each patch to zero mean, unit std over its own values; a flat patch becomes zeros."""
    x = patches.float()
    mean = x.mean(dim=-1, keepdim=True)
    std = x.std(dim=-1, keepdim=True)
    return (x - mean) / (std + EPS)


def images_to_tokens(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """uint8 or float (B, C, H, W) images -> standardised float32 spiral patch sequences."""
    return standardise(patchify(images, patch_size))
