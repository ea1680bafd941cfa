"""Synthetic multi-band galaxy cutouts, written as a shard set.

Each galaxy is a Sersic bulge plus an exponential disc seen at a random inclination and
position angle, with optional logarithmic spiral arms, a bar, star-forming clumps along the arms
and a dust lane in edge-on discs. Bulges are redder than discs, arms and clumps bluer. A
redshift-like parameter shrinks the galaxy and dims it (a simple distance modulus) and reddens
it. Faint field stars and sometimes a neighbour galaxy are added, the light is blurred by a
Moffat PSF (sampled in real space, applied by FFT, vectorised over the batch), artefacts are
added (a saturated star with diffraction spikes, a satellite trail in one band, a no-data strip
along an edge), then sky and source Poisson noise plus read noise (Gaussian approximations), and
finally a Legacy-Survey-style asinh colour stretch maps the fluxes to uint8.

Stamps are cut to the galaxy: its disc half-light radius is 22% of the stamp's side at the
median (0.8 px to 40%), so most patches of a 32x32 stamp cut into 8x8 patches lie on the galaxy.
Version 1 framed galaxies twice as loosely, so three quarters of every stamp was sky, which
per-patch standardisation turns into unit-variance noise that no model can predict. Fluxes are in
nanomaggies per pixel of a 32x32 stamp (other sizes keep the same surface brightness), so the
stretch is photometric: the same galaxy looks the same in every image, and the sky noise per
pixel is that of version 1 (Legacy-Survey-like depth).

The true parameters are stored as metadata columns (see ``METADATA_FIELDS``): ``sersic_n``
(bulge), ``r_eff_pix`` (disc half-light radius), ``ellipticity`` (1 - b/a), ``position_angle``
(radians in [0, pi), from the +x axis towards +y), ``bulge_fraction``, ``mag_r``, ``g_r``,
``r_z`` (colours of the galaxy's own light), ``redshift``, ``arm_strength``, ``n_arms``,
``bar_strength``, ``n_clumps``, ``dust_strength``, ``psf_fwhm_pix``, ``sky_level``
(r band, nanomaggies per pixel), ``has_neighbour``, ``has_artefact`` and ``artefact``.

Galaxy ``i`` depends only on the seed, ``i`` and the image size and bands: its random numbers
come from a ``SeedSequence(seed, spawn_key=(i // 256,))`` block stream, so shard size and
``--n`` change only how many galaxies are written, never what they look like.

    python -m astropt.data.synth --out data/synth --n 100000 --size 32
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator, Sequence
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
from scipy import fft, special

from astropt.data.schema import SplitWriter, resolve, shard_schema

GENERATOR_VERSION = "3"  # bump whenever the same settings would produce different images
BLOCK_SIZE = 256  # galaxies per random stream
BRIGHTEST_MAG_R = 14.5  # brighter galaxies saturate whole stamps (a constant image)
CHUNK_PIXELS = 2**17  # galaxies x pixels rendered at once (bounds memory for large stamps)
REFERENCE_SIZE = 32  # fluxes are per pixel of a stamp this size

WAVELENGTH_UM = {"u": 0.36, "g": 0.48, "r": 0.62, "i": 0.75, "z": 0.91, "y": 1.0}
RGB_SCALE = {"u": 8.0, "g": 6.0, "r": 3.4, "i": 2.8, "z": 2.2, "y": 2.0}  # legacypipe-like
STRETCH_Q, STRETCH_M = 20.0, 0.03
GAIN = 50000.0  # counts per nanomaggy: sets the Poisson noise
READ_NOISE = 0.002  # nanomaggies per pixel
MOFFAT_BETAS = (2.5, 3.5, 4.5)
NOISE_LEVELS = 4096  # Gaussian noise lookup table: this small, it stays in L1 cache
MAX_CLUMPS, MAX_STARS = 8, 3
ARTEFACTS = ("none", "star", "trail", "gap")
ARTEFACT_P = (0.88, 0.05, 0.04, 0.03)
HUBBLE_DISTANCE_MPC, Q0 = 4283.0, -0.55

METADATA_FIELDS = [
    *(
        pa.field(name, pa.float64())
        for name in (
            "sersic_n",
            "r_eff_pix",
            "ellipticity",
            "position_angle",
            "bulge_fraction",
            "mag_r",
            "g_r",
            "r_z",
            "redshift",
            "arm_strength",
        )
    ),
    pa.field("n_arms", pa.int64()),
    pa.field("bar_strength", pa.float64()),
    pa.field("n_clumps", pa.int64()),
    pa.field("dust_strength", pa.float64()),
    pa.field("psf_fwhm_pix", pa.float64()),
    pa.field("sky_level", pa.float64()),
    pa.field("has_neighbour", pa.bool_()),
    pa.field("has_artefact", pa.bool_()),
    pa.field("artefact", pa.string()),
]

Params = dict[str, np.ndarray]


def distance_modulus(z: np.ndarray) -> np.ndarray:
    """5 log10(d_L / 10 pc) with a second-order low-redshift luminosity distance."""
    d_l = HUBBLE_DISTANCE_MPC * z * (1 + 0.5 * (1 - Q0) * z)
    return 5 * np.log10(d_l * 1e5)


def _colour(
    rng: np.random.Generator, g_r: float, r_z: float, z: np.ndarray, k: float
) -> np.ndarray:
    """(n, 2) (g-r, r-z) of a stellar population with scatter, reddened by k * redshift."""
    n = len(z)
    g = g_r + 0.06 * rng.standard_normal(n) + k * z
    return np.stack([g, r_z + 0.04 * rng.standard_normal(n) + 0.4 * k * z], axis=1)


def draw_parameters(rng: np.random.Generator, n: int, size: int) -> Params:
    """All random numbers of `n` galaxies except the pixel noise (drawn in a fixed order)."""
    scale = size / REFERENCE_SIZE
    p: Params = {}
    z = 0.02 + 0.23 * rng.beta(1.6, 3.5, n)
    early = rng.random(n) < 0.3
    p["redshift"] = z
    p["bulge_fraction"] = np.where(early, rng.uniform(0.75, 1.0, n), 0.6 * rng.beta(1.2, 3.0, n))
    p["sersic_n"] = np.where(early, rng.uniform(2.5, 6.0, n), rng.uniform(1.0, 4.0, n))
    abs_mag = np.clip(rng.normal(-20.7, 0.9, n) - 0.3 * early, -23.5, -18.0)
    p["mag_r"] = np.maximum(abs_mag + distance_modulus(z), BRIGHTEST_MAG_R)
    size_lum = 10 ** (rng.normal(0, 0.15, n) - 0.1 * (abs_mag + 20.7))
    p["r_eff_pix"] = np.clip(size * 0.22 * size_lum * (0.05 / z) ** 0.75, 0.8 * scale, 0.4 * size)
    cos_i = rng.random(n)
    q_disc = np.sqrt(cos_i**2 * (1 - 0.15**2) + 0.15**2)
    e_early = rng.uniform(0.0, 0.6, n)
    p["ellipticity"] = np.where(early, e_early, 1 - q_disc)
    p["bulge_ellipticity"] = np.where(early, e_early, (1 - q_disc) * rng.uniform(0.2, 0.6, n))
    p["bulge_radius"] = p["r_eff_pix"] * np.where(early, 1.0, rng.uniform(0.15, 0.45, n))
    p["position_angle"] = rng.uniform(0, np.pi, n)
    p["centre"] = size / 2 - 0.5 + 0.4 * scale * rng.standard_normal((n, 2))
    _draw_disc_structure(rng, p, early)
    _draw_colours(rng, p)
    _draw_surroundings(rng, p, size)
    return p


def _draw_disc_structure(rng: np.random.Generator, p: Params, early: np.ndarray) -> None:
    """Spiral arms, bar, clumps and dust lane of the disc galaxies."""
    n = len(early)
    spiral = ~early & (rng.random(n) < 0.75)
    p["arm_strength"] = np.where(spiral, rng.uniform(0.15, 0.7, n), 0.0)
    p["n_arms"] = np.where(spiral, rng.choice([1, 2, 2, 2, 2, 3, 3, 4], n), 0)
    p["arm_pitch"] = np.radians(rng.uniform(10, 35, n))
    p["arm_phase"] = rng.uniform(0, 2 * np.pi, n)
    p["arm_sharpness"] = rng.uniform(1.0, 6.0, n)
    barred = ~early & (rng.random(n) < 0.35)
    p["bar_strength"] = np.where(barred, rng.uniform(0.05, 0.3, n), 0.0)
    p["bar_angle"] = rng.uniform(0, np.pi, n)
    p["bar_length"] = rng.uniform(0.6, 1.4, n)
    p["bar_axis_ratio"] = rng.uniform(0.2, 0.4, n)
    expected = 0.5 + 5 * p["arm_strength"]
    p["n_clumps"] = np.where(early, 0, np.minimum(rng.poisson(expected), MAX_CLUMPS))
    p["clump_fraction"] = rng.uniform(0.03, 0.15, n) * (p["n_clumps"] > 0)
    p["clump_radius"] = rng.uniform(0.4, 2.5, (n, MAX_CLUMPS))
    p["clump_arm"] = rng.integers(0, 4, (n, MAX_CLUMPS))
    p["clump_scatter"] = rng.normal(0, 0.15, (n, MAX_CLUMPS))
    p["clump_angle"] = rng.uniform(0, 2 * np.pi, (n, MAX_CLUMPS))
    p["clump_sigma"] = rng.uniform(0.4, 1.0, (n, MAX_CLUMPS))
    p["clump_weight"] = rng.gamma(2.0, 1.0, (n, MAX_CLUMPS))
    dusty = ~early & (p["ellipticity"] > 0.55) & (rng.random(n) < 0.7)
    p["dust_strength"] = np.where(dusty, rng.uniform(0.3, 0.8, n), 0.0)
    p["dust_offset"] = rng.uniform(-0.5, 0.5, n)


def _draw_colours(rng: np.random.Generator, p: Params) -> None:
    """(g-r, r-z) of each component, and the r-band flux fraction of each."""
    z = p["redshift"]
    bulge = _colour(rng, 0.90, 0.50, z, 1.2)
    disc = _colour(rng, 0.60, 0.33, z, 0.8)
    young = _colour(rng, 0.30, 0.15, z, 0.5)
    rest = 1 - p["bulge_fraction"]
    bar = rest * p["bar_strength"]
    clumps = rest * p["clump_fraction"]
    arms = (rest - bar - clumps) * p["arm_strength"]
    smooth = rest - bar - clumps - arms
    p["fractions"] = np.stack([p["bulge_fraction"], smooth, arms, bar, clumps], axis=1)
    colours = np.stack([bulge, disc, young, bulge - 0.05, young], axis=1)  # (n, 5, 2)
    p["component_colours"] = colours
    g = np.sum(p["fractions"] * 10 ** (-0.4 * colours[..., 0]), axis=1)
    z_flux = np.sum(p["fractions"] * 10 ** (0.4 * colours[..., 1]), axis=1)
    p["g_r"] = -2.5 * np.log10(g)
    p["r_z"] = 2.5 * np.log10(z_flux)


def _draw_surroundings(rng: np.random.Generator, p: Params, size: int) -> None:
    """Observing conditions, a neighbour galaxy, field stars and one possible artefact."""
    n, scale = len(p["redshift"]), size / REFERENCE_SIZE
    p["psf_fwhm_pix"] = rng.uniform(1.0, 2.2, n) * scale
    p["psf_beta"] = rng.integers(0, len(MOFFAT_BETAS), n)
    p["sky_level"] = rng.uniform(0.3, 2.0, n)
    p["has_neighbour"] = rng.random(n) < 0.3
    radius, angle = rng.uniform(0.2, 0.45, n) * size, rng.uniform(0, 2 * np.pi, n)
    p["nb_centre"] = p["centre"] + np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)
    p["nb_sersic_n"] = rng.uniform(0.8, 4.0, n)
    p["nb_radius"] = np.clip(p["r_eff_pix"] * np.exp(rng.normal(-0.5, 0.5, n)), 0.7, size / 4)
    p["nb_q"] = rng.uniform(0.3, 1.0, n)
    p["nb_angle"] = rng.uniform(0, np.pi, n)
    p["nb_mag"] = p["mag_r"] + rng.uniform(-0.5, 3.0, n)
    p["nb_colour"] = np.stack([rng.uniform(0.3, 1.2, n), rng.uniform(0.15, 0.6, n)], 1)
    p["star_count"] = np.minimum(rng.poisson(0.6, n), MAX_STARS)
    p["star_xy"] = rng.uniform(0, size - 1, (n, MAX_STARS, 2))
    p["star_mag"] = rng.uniform(17.0, 22.0, (n, MAX_STARS))
    star_gr = rng.uniform(0.3, 1.5, (n, MAX_STARS))
    p["star_colour"] = np.stack([star_gr, 0.1 + 0.4 * star_gr], axis=-1)
    kind = rng.choice(len(ARTEFACTS), n, p=ARTEFACT_P)
    p["artefact"] = np.asarray(ARTEFACTS, dtype=object)[kind]
    p["has_artefact"] = kind > 0
    radius, angle = rng.uniform(0.25, 0.5, n) * size, rng.uniform(0, 2 * np.pi, n)
    p["bright_xy"] = p["centre"] + np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)
    p["bright_mag"] = rng.uniform(8.5, 12.0, n)
    p["spike_length"] = rng.uniform(0.15, 0.4, n) * size
    p["trail_angle"] = rng.uniform(0, np.pi, n)
    p["trail_offset"] = rng.uniform(-0.4, 0.4, n) * size
    p["trail_band"] = rng.random(n)
    p["trail_level"] = rng.uniform(0.03, 0.2, n)
    p["gap_edge"] = rng.integers(0, 4, n)
    p["gap_width"] = rng.uniform(0.05, 0.25, n) * size


def band_offsets(colours: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """Magnitude minus r magnitude in each band, from (..., 2) colours (g-r, r-z): (..., bands).

    Piecewise linear in log wavelength through the g, r and z anchors, extrapolated beyond them.
    """
    g_r, r_z = colours[..., 0], colours[..., 1]
    log_g, log_r, log_z = np.log([WAVELENGTH_UM[b] for b in "grz"])
    offsets = []
    for band in bands:
        x = np.log(WAVELENGTH_UM[band]) - log_r
        slope = g_r / (log_g - log_r) if x < 0 else -r_z / (log_z - log_r)
        offsets.append(slope * x)
    return np.stack(offsets, axis=-1)


def _moffat(r2: np.ndarray, fwhm: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Unit-flux Moffat profile at squared radii `r2` (fwhm and beta broadcast against r2)."""
    alpha2 = np.square(fwhm / (2 * np.sqrt(np.float32(2) ** (1 / beta) - 1)))
    return (beta - 1) / (np.float32(math.pi) * alpha2) * (1 + r2 / alpha2) ** -beta


@cache
def _wrapped_r2(size: int) -> np.ndarray:
    """Squared distance of each pixel from pixel (0, 0) on a periodic size x size grid."""
    d = np.minimum(np.arange(size), size - np.arange(size)).astype(np.float32)
    return d[:, None] ** 2 + d[None, :] ** 2


def _psf_transfer(p: Params, size: int) -> np.ndarray:
    """rfft2 of each galaxy's Moffat PSF sampled at pixel centres, (n, 1, S, S // 2 + 1).

    Sampling in real space keeps the PSF positive however narrow it is (a transfer function cut
    off at Nyquist would ring around compact sources).
    """
    fwhm = p["psf_fwhm_pix"][:, None, None]
    beta = np.asarray(MOFFAT_BETAS, dtype=np.float32)[p["psf_beta"]][:, None, None]
    psf = _moffat(_wrapped_r2(size), fwhm, beta)
    return fft.rfft2(psf / psf.sum(axis=(1, 2), keepdims=True))[:, None]


@cache
def _normal_quantiles() -> np.ndarray:
    """Equally likely standard normal values: a lookup table for fast Gaussian noise."""
    return special.ndtri((np.arange(NOISE_LEVELS) + 0.5) / NOISE_LEVELS).astype(np.float32)


def gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 noise in 4096 levels (tails cut at 3.5 sigma), 6x faster than
    ``rng.standard_normal``; invisible once images are quantised to uint8."""
    count = math.prod(shape)
    raw = rng.bit_generator.random_raw(-(-count // 4)).view(np.uint16)[:count]
    return np.take(_normal_quantiles(), raw & (NOISE_LEVELS - 1)).reshape(shape)


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


def _star_images(
    p: Params, rows: np.ndarray, x: np.ndarray, y: np.ndarray, size: int
) -> np.ndarray:
    """Unit-flux PSF images (k, S, S) of point sources at (x, y)."""
    grid = np.arange(size, dtype=np.float32)
    r2 = (grid - y[:, None])[:, :, None] ** 2 + (grid - x[:, None])[:, None, :] ** 2
    beta = np.asarray(MOFFAT_BETAS, dtype=np.float32)[p["psf_beta"][rows]][:, None, None]
    return _moffat(r2, p["psf_fwhm_pix"][rows, None, None], beta)


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


def _bright_stars(p: Params, light: np.ndarray, bands: Sequence[str]) -> None:
    """Saturated stars with diffraction spikes, in real space (post-PSF, so no wrap-around)."""
    size = light.shape[-1]
    rows = np.flatnonzero(p["artefact"] == "star")
    x, y = p["bright_xy"][rows, 0], p["bright_xy"][rows, 1]
    flux = 10 ** ((22.5 - p["bright_mag"][rows]) / 2.5) * (size / REFERENCE_SIZE) ** 2
    star = _star_images(p, rows, x, y, size) + 3e-4 * _spikes(p, rows, x, y, size)
    image = flux[:, None, None] * star
    colour = 10 ** (-0.4 * band_offsets(np.array([0.6, 0.3]), bands)).astype(np.float32)
    light[rows] += colour[None, :, None, None] * image[:, None]


def _spikes(p: Params, rows: np.ndarray, x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """Horizontal and vertical diffraction spikes through (x, y), peak 1, (k, S, S)."""
    grid = np.arange(size, dtype=np.float32)
    width = 0.4 * p["psf_fwhm_pix"][rows, None]
    length = p["spike_length"][rows, None]
    across_x = np.exp(-0.5 * ((grid - x[:, None]) / width) ** 2)
    along_x = np.exp(-np.abs(grid - x[:, None]) / length)
    across_y = np.exp(-0.5 * ((grid - y[:, None]) / width) ** 2)
    along_y = np.exp(-np.abs(grid - y[:, None]) / length)
    return along_y[:, :, None] * across_x[:, None, :] + across_y[:, :, None] * along_x[:, None, :]


def _trails(p: Params, light: np.ndarray, bands: Sequence[str]) -> None:
    """Satellite trails: a straight line in one band only (post-PSF)."""
    grid = np.arange(light.shape[-1], dtype=np.float32)
    rows = np.flatnonzero(p["artefact"] == "trail")
    angle = p["trail_angle"][rows, None, None]
    dist = (
        (grid[None, None, :] - p["centre"][rows, 0, None, None]) * np.sin(angle)
        - (grid[None, :, None] - p["centre"][rows, 1, None, None]) * np.cos(angle)
        - p["trail_offset"][rows, None, None]
    )
    sigma = 0.35 * p["psf_fwhm_pix"][rows, None, None]
    band = np.minimum((p["trail_band"][rows] * len(bands)).astype(np.intp), len(bands) - 1)
    trail = p["trail_level"][rows, None, None] * np.exp(-0.5 * (dist / sigma) ** 2)
    light[rows, band] += trail.astype(np.float32)


def _gap_mask(p: Params, size: int) -> np.ndarray:
    """True where an image has no data (a strip along one edge), (n, S, S)."""
    grid = np.arange(size)
    width = p["gap_width"][:, None, None]
    edge = p["gap_edge"][:, None, None]
    x, y = grid[None, None, :], grid[None, :, None]
    strip = np.where(
        edge == 0,
        x < width,
        np.where(edge == 1, x >= size - width, np.where(edge == 2, y < width, y >= size - width)),
    )
    return strip & (p["artefact"] == "gap")[:, None, None]


def legacy_stretch(flux: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """Legacy Survey style asinh colour stretch of (n, bands, H, W) fluxes to uint8.

    Each band is scaled (``RGB_SCALE``), the mean of the scaled bands I sets a common asinh
    compression asinh(Q I) / (sqrt(Q) I), which keeps colours, and an offset lifts the sky.
    """
    scale = np.array([RGB_SCALE[b] for b in bands], dtype=np.float32)[:, None, None]
    scaled = flux * scale
    mean = scaled.mean(axis=-3, keepdims=True)
    tiny = np.abs(mean) < 1e-6
    mean[tiny] = 1.0
    gain = np.arcsinh(STRETCH_Q * mean) / (math.sqrt(STRETCH_Q) * mean)
    gain[tiny] = math.sqrt(STRETCH_Q)
    scaled += STRETCH_M
    scaled *= gain * 255
    np.clip(scaled, 0, 255, out=scaled)
    scaled += 0.5
    return scaled.astype(np.uint8)


def render(p: Params, size: int, bands: Sequence[str], noise: np.random.Generator) -> np.ndarray:
    """uint8 images (n, bands, S, S) of the galaxies described by `p`."""
    p = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in p.items()}
    light = _galaxy_light(p, _Frame(p, size), size, bands)
    _neighbours(p, light, size, bands)
    _field_stars(p, light, bands)
    light = fft.irfft2(fft.rfft2(light) * _psf_transfer(p, size), s=(size, size))
    _bright_stars(p, light, bands)
    _trails(p, light, bands)
    ratio = np.array([WAVELENGTH_UM[b] / WAVELENGTH_UM["r"] for b in bands], dtype=np.float32)
    sky = (p["sky_level"][:, None] * ratio**2.5)[:, :, None, None]
    sigma = np.maximum(light, 0)
    sigma += sky
    sigma *= 1 / GAIN
    sigma += READ_NOISE**2
    np.sqrt(sigma, out=sigma)
    sigma *= gaussian_noise(noise, light.shape)
    light += sigma
    images = legacy_stretch(light, bands)
    images *= ~_gap_mask(p, size)[:, None]
    return images


def galaxy_block(
    seed: int, block: int, size: int, bands: Sequence[str], count: int = BLOCK_SIZE
) -> tuple[Params, np.ndarray]:
    """Parameters and images of galaxies block*256 ... block*256 + count - 1."""
    streams = np.random.SeedSequence(seed, spawn_key=(block,)).spawn(2)
    params = draw_parameters(np.random.default_rng(streams[0]), BLOCK_SIZE, size)
    params = {k: v[:count] for k, v in params.items()}
    noise = np.random.default_rng(streams[1])
    chunk = max(1, CHUNK_PIXELS // (size * size * len(bands)))
    images = np.empty((count, len(bands), size, size), dtype=np.uint8)
    for start in range(0, count, chunk):
        part = {k: v[start : start + chunk] for k, v in params.items()}
        images[start : start + chunk] = render(part, size, bands, noise)
    return params, images


def _check_bands(bands: Sequence[str]) -> None:
    unknown = set(bands) - set(WAVELENGTH_UM)
    if unknown:
        raise ValueError(f"unknown bands {sorted(unknown)}; known: {', '.join(WAVELENGTH_UM)}")


def object_id(index: int) -> str:
    """The id of galaxy `index` (which set it lands in is a hash of it: `is_validation`)."""
    return f"synth-{index:09d}"


def iter_galaxies(
    n: int, size: int, bands: Sequence[str], seed: int = 0
) -> Iterator[tuple[list[str], np.ndarray, dict[str, np.ndarray]]]:
    """(object ids, uint8 images, metadata columns) block by block, for galaxies 0 ... n-1."""
    _check_bands(bands)
    for block, start in enumerate(range(0, n, BLOCK_SIZE)):
        params, images = galaxy_block(seed, block, size, bands, min(BLOCK_SIZE, n - start))
        ids = [object_id(i) for i in range(start, start + len(images))]
        yield ids, images, {f.name: params[f.name] for f in METADATA_FIELDS}


def generate(
    out: str,
    n: int,
    size: int,
    bands: Sequence[str] = ("g", "r", "z"),
    val_fraction: float = 0.1,
    seed: int = 0,
    shard_size: int = 1024,
    filesystem: pafs.FileSystem | None = None,
) -> dict[str, int]:
    """Write `n` galaxies to out/train and out/val; the number of rows of each."""
    _check_bands(bands)
    schema = shard_schema((len(bands), size, size), bands, METADATA_FIELDS)
    writer = SplitWriter(out, schema, val_fraction, seed, shard_size, filesystem)
    for ids, images, metadata in iter_galaxies(n, size, bands, seed):
        writer.add(ids, images, metadata)
    return writer.close()


def save_preview(images: np.ndarray, bands: Sequence[str], path: str, columns: int = 4) -> None:
    """A PNG mosaic of (n, bands, H, W) uint8 images: reddest band as R, bluest as B."""
    from PIL import Image

    order = np.argsort([WAVELENGTH_UM.get(b, 0) for b in bands])
    rgb = images[:, [order[-1], order[len(order) // 2], order[0]]].transpose(0, 2, 3, 1)
    rows = -(-len(rgb) // columns)
    h, w = rgb.shape[1:3]
    mosaic = np.zeros((rows * (h + 2), columns * (w + 2), 3), dtype=np.uint8)
    for index, tile in enumerate(rgb):
        r, c = divmod(index, columns)
        mosaic[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = tile
    zoom = max(1, 256 // w)
    picture = Image.fromarray(mosaic).resize(
        (mosaic.shape[1] * zoom, mosaic.shape[0] * zoom), Image.Resampling.NEAREST
    )
    fs, location = resolve(path)
    with fs.open_output_stream(location) as handle:
        picture.save(handle, format="PNG")


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: write a synthetic data set."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output directory or URI")
    parser.add_argument("--n", type=int, required=True, help="number of galaxies")
    parser.add_argument("--size", type=int, default=32, help="image height and width")
    parser.add_argument("--bands", default="g,r,z", help="comma separated, from ugrizy")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--preview", help="also save a PNG mosaic of the first 16 galaxies")
    args = parser.parse_args(argv)
    bands = args.bands.split(",")
    try:
        counts = generate(
            args.out, args.n, args.size, bands, args.val_fraction, args.seed, args.shard_size
        )
    except (FileExistsError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    print(f"wrote {counts['train']} training and {counts['val']} validation galaxies to {args.out}")
    if args.preview:
        _, images, _ = next(iter_galaxies(min(args.n, 16), args.size, bands, args.seed))
        save_preview(images, bands, args.preview)


if __name__ == "__main__":
    main()
