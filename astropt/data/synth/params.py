"""The random description of each galaxy: its parameters, colours and metadata columns.

`draw_parameters` draws every random number of a batch of galaxies except the pixel noise, in a
fixed order. A redshift-like parameter shrinks the galaxy, dims it (a simple distance modulus)
and reddens it; bulges are redder than discs, arms and clumps bluer.

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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

GENERATOR_VERSION = "3"  # bump whenever the same settings would produce different images
BRIGHTEST_MAG_R = 14.5  # brighter galaxies saturate whole stamps (a constant image)
REFERENCE_SIZE = 32  # fluxes are per pixel of a stamp this size

WAVELENGTH_UM = {"u": 0.36, "g": 0.48, "r": 0.62, "i": 0.75, "z": 0.91, "y": 1.0}
MOFFAT_BETAS = (2.5, 3.5, 4.5)
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


def check_bands(bands: Sequence[str]) -> None:
    """Refuse band names without a known wavelength."""
    unknown = set(bands) - set(WAVELENGTH_UM)
    if unknown:
        raise ValueError(f"unknown bands {sorted(unknown)}; known: {', '.join(WAVELENGTH_UM)}")
