"""The light of the sky before the telescope blurs it: galaxies, neighbours and field stars.

`scene_light` renders each galaxy's components (Sersic bulge, exponential disc seen at its
inclination and position angle, spiral arms, bar, clumps along the arms), each in its own
colour, dims a dust lane in edge-on discs, and adds a neighbour galaxy and faint field stars.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from astropt.data.synth.params import (
    MAX_CLUMPS,
    MAX_STARS,
    REFERENCE_SIZE,
    WAVELENGTH_UM,
    Params,
    band_offsets,
)


def scene_light(p: Params, size: int, bands: Sequence[str]) -> np.ndarray:
    """Pre-PSF light (n, bands, S, S) of the galaxies `p`, their neighbours and field stars."""
    light = _galaxy_light(p, _Frame(p, size), size, bands)
    _neighbours(p, light, size, bands)
    _field_stars(p, light, bands)
    return light


def _sersic(
    dx: np.ndarray,
    dy: np.ndarray,
    radius: np.ndarray,
    index: np.ndarray,
    q: np.ndarray,
    angle: np.ndarray,
    soft: float = 0.5,
) -> np.ndarray:
    """Unit-sum Sersic images; dx, dy are (n, 1, S) / (n, S, 1) offsets from the centres, q the
    axis ratio, `soft` a core softening (pixels) that tames the cusp of high-index profiles."""
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u = dx * cos + dy * sin
    v = (dy * cos - dx * sin) / q[:, None, None]
    r2 = (u * u + v * v + soft**2) / (radius[:, None, None] ** 2)
    n = index[:, None, None]
    b_n = 2 * n - 1 / 3 + 4 / (405 * n) + 46 / (25515 * n**2)
    return _unit(np.exp(-b_n * np.exp(np.log(r2) * (0.5 / n))))


def _unit(image: np.ndarray) -> np.ndarray:
    """Scale each image of a batch to unit sum (all-zero images stay zero)."""
    total = image.sum(axis=(-2, -1), keepdims=True)
    return image / np.where(total > 0, total, 1)


class _Frame:
    """Pixel offsets of a batch of galaxies, in the image and in each galaxy's disc plane."""

    def __init__(self, p: Params, size: int) -> None:
        grid = np.arange(size, dtype=np.float32)
        self.dx = grid[None, None, :] - p["centre"][:, 0, None, None]
        self.dy = grid[None, :, None] - p["centre"][:, 1, None, None]
        angle = p["position_angle"][:, None, None]
        self.cos, self.sin = np.cos(angle), np.sin(angle)
        self.q = 1 - p["ellipticity"][:, None, None]
        self.u = self.dx * self.cos + self.dy * self.sin  # along the major axis
        self.v = self.dy * self.cos - self.dx * self.sin  # along the minor axis
        self.w = self.v / self.q  # deprojected minor-axis coordinate
        self.h = p["r_eff_pix"][:, None, None] / 1.678  # exponential scale length
        self.r = np.sqrt(self.u**2 + self.w**2 + 0.25)


def _arms(p: Params, f: _Frame, rows: np.ndarray) -> np.ndarray:
    """Logarithmic spiral arm light (unit sum) for the galaxies `rows` of the frame."""
    rh = f.r[rows] / f.h[rows]
    m = p["n_arms"][rows, None, None].astype(np.float32)
    phase = np.arctan2(f.w[rows], f.u[rows])
    phase *= m
    phase -= (m / np.tan(p["arm_pitch"][rows, None, None])) * np.log(rh)
    phase -= p["arm_phase"][rows, None, None]
    np.cos(phase, out=phase)
    phase -= 1
    phase *= p["arm_sharpness"][rows, None, None]
    phase -= rh  # ridges (von Mises in phase) on the exponential disc
    light = np.exp(phase, out=phase)
    np.square(rh, out=rh)
    light *= rh / (rh + 0.49)  # arms fade out inside ~0.7 scale lengths
    return _unit(light)


def _bar(p: Params, f: _Frame, rows: np.ndarray) -> np.ndarray:
    """Boxy bar light (unit sum) in the disc plane."""
    angle = p["bar_angle"][rows, None, None]
    along = f.u[rows] * np.cos(angle) + f.w[rows] * np.sin(angle)
    across = f.w[rows] * np.cos(angle) - f.u[rows] * np.sin(angle)
    length = p["bar_length"][rows, None, None] * f.h[rows]
    width = length * p["bar_axis_ratio"][rows, None, None]
    along = np.square(along / length)
    return _unit(np.exp(-np.square(along) - np.square(across / width)))


def _clumps(p: Params, f: _Frame, rows: np.ndarray, scale: float) -> np.ndarray:
    """Star-forming knots (unit sum) on the spiral arms, as separable Gaussians."""
    h = f.h[rows, 0, 0, None]
    radius = p["clump_radius"][rows] * h
    m = np.maximum(p["n_arms"][rows, None], 1)
    on_arm = (
        np.log(radius / h) / np.tan(p["arm_pitch"][rows, None])
        + (p["arm_phase"][rows, None] + 2 * np.pi * (p["clump_arm"][rows] % m)) / m
        + p["clump_scatter"][rows]
    )
    theta = np.where(p["n_arms"][rows, None] > 0, on_arm, p["clump_angle"][rows])
    u, w = radius * np.cos(theta), radius * np.sin(theta)
    v = w * f.q[rows, 0, 0, None]
    cos, sin = f.cos[rows, 0, 0, None], f.sin[rows, 0, 0, None]
    x = p["centre"][rows, 0, None] + u * cos - v * sin
    y = p["centre"][rows, 1, None] + u * sin + v * cos
    sigma = p["clump_sigma"][rows] * scale
    live = np.arange(MAX_CLUMPS)[None, :] < p["n_clumps"][rows, None]
    weight = p["clump_weight"][rows] * live
    grid = np.arange(f.dx.shape[-1], dtype=np.float32)
    gx = np.exp(-0.5 * ((grid - x[..., None]) / sigma[..., None]) ** 2)
    gy = np.exp(-0.5 * ((grid - y[..., None]) / sigma[..., None]) ** 2) * weight[..., None]
    return _unit(np.matmul(gy.transpose(0, 2, 1), gx))


def _galaxy_light(p: Params, f: _Frame, size: int, bands: Sequence[str]) -> np.ndarray:
    """Pre-PSF light of the main galaxies, (n, bands, S, S) in nanomaggies per pixel."""
    n = len(p["redshift"])
    comps = np.zeros((n, 5, size, size), dtype=np.float32)
    comps[:, 0] = _sersic(
        f.dx,
        f.dy,
        p["bulge_radius"],
        p["sersic_n"],
        1 - p["bulge_ellipticity"],
        p["position_angle"],
    )
    comps[:, 1] = _unit(np.exp(-f.r / f.h))
    for index, name, draw in ((2, "arm_strength", _arms), (3, "bar_strength", _bar)):
        rows = np.flatnonzero(p[name] > 0)
        comps[rows, index] = draw(p, f, rows)
    rows = np.flatnonzero(p["n_clumps"] > 0)
    comps[rows, 4] = _clumps(p, f, rows, size / REFERENCE_SIZE)
    flux = 10 ** ((22.5 - p["mag_r"]) / 2.5) * (size / REFERENCE_SIZE) ** 2
    offsets = band_offsets(p["component_colours"], bands)
    weights = flux[:, None, None] * p["fractions"][:, :, None] * 10 ** (-0.4 * offsets)
    weights = weights.astype(np.float32).transpose(0, 2, 1)
    light = np.matmul(weights, comps.reshape(n, 5, -1)).reshape(n, len(bands), size, size)
    _dust(p, f, light, bands)
    return light


def _dust(p: Params, f: _Frame, light: np.ndarray, bands: Sequence[str]) -> None:
    """Dim a lane along the major axis of dusty edge-on discs, most in the bluest bands."""
    rows = np.flatnonzero(p["dust_strength"] > 0)
    width = 0.1 * f.h[rows] * 1.678 + 0.5
    lane = np.exp(-(((f.v[rows] - p["dust_offset"][rows, None, None] * width) / width) ** 2))
    lane *= np.exp(-((f.u[rows] / (2.5 * f.h[rows])) ** 2))
    ratio = np.array([WAVELENGTH_UM["r"] / WAVELENGTH_UM[b] for b in bands], dtype=np.float32)
    depth = np.minimum(p["dust_strength"][rows, None] * ratio, 0.95)
    light[rows] *= 1 - depth[:, :, None, None] * lane[:, None]


def _neighbours(p: Params, light: np.ndarray, size: int, bands: Sequence[str]) -> None:
    """Add a neighbour galaxy where there is one."""
    rows = np.flatnonzero(p["has_neighbour"])
    grid = np.arange(size, dtype=np.float32)
    dx = grid[None, None, :] - p["nb_centre"][rows, 0, None, None]
    dy = grid[None, :, None] - p["nb_centre"][rows, 1, None, None]
    image = _sersic(
        dx, dy, p["nb_radius"][rows], p["nb_sersic_n"][rows], p["nb_q"][rows], p["nb_angle"][rows]
    )
    flux = 10 ** ((22.5 - p["nb_mag"][rows]) / 2.5) * (size / REFERENCE_SIZE) ** 2
    weights = flux[:, None] * 10 ** (-0.4 * band_offsets(p["nb_colour"][rows], bands))
    light[rows] += weights[:, :, None, None].astype(np.float32) * image[:, None]


def _field_stars(p: Params, light: np.ndarray, bands: Sequence[str]) -> None:
    """Deposit faint field stars as bilinear point sources (pre-PSF)."""
    n, size = len(light), light.shape[-1]
    live = np.arange(MAX_STARS)[None, :] < p["star_count"][:, None]
    flux = 10 ** ((22.5 - p["star_mag"]) / 2.5) * (size / REFERENCE_SIZE) ** 2 * live
    per_band = flux[..., None] * 10 ** (-0.4 * band_offsets(p["star_colour"], bands))
    x0, y0 = np.floor(p["star_xy"][..., 0]), np.floor(p["star_xy"][..., 1])
    fx, fy = p["star_xy"][..., 0] - x0, p["star_xy"][..., 1] - y0
    galaxy = np.arange(n)[:, None, None]
    band = np.arange(len(bands))[None, None, :]
    corners = ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy))
    for ox, oy, share in (*corners, (1, 1, fx * fy)):
        xs = np.minimum(x0 + ox, size - 1).astype(np.intp)[..., None]
        ys = np.minimum(y0 + oy, size - 1).astype(np.intp)[..., None]
        np.add.at(light, (galaxy, band, ys, xs), (per_band * share[..., None]).astype(np.float32))
