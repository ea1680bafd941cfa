"""Throughput of the synthetic galaxy generator, rendering only and rendering + writing shards.

Reports images per second of wall time and per second of CPU time (all threads of this
process); on a busy machine the CPU figure is the one-core rate. Writes
``benchmarks/results/synth_throughput.json``.

``--galsim N`` also renders N of the same galaxies' core with GalSim (``pip install -e
".[bench]"``): a Sersic bulge and an exponential disc, sheared to their axis ratios and rotated,
the clumps as GalSim random knots, each convolved with the galaxy's Moffat PSF and drawn once
(the bands are weights of these images), plus Gaussian noise. Arms, bars, dust lanes, stars and
artefacts have no GalSim profile and are left out, so this is an upper bound on what GalSim
would render per second. GalSim tabulates each Sersic index it meets, so indices are rounded to
steps of 0.5 (a continuous index costs a new table per galaxy).

    python benchmarks/synth_throughput.py --n 4096 --size 32 --galsim 300
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np

from astropt.data import synth

RESULTS = Path(__file__).parent / "results" / "synth_throughput.json"


def timed(work: Callable[[], object], images: int) -> dict[str, float]:
    """Images per second of wall and of CPU time for one call of `work`."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "images_per_s": images / wall,
        "images_per_cpu_s": images / cpu,
    }


def galsim_render(n: int, size: int, bands: list[str]) -> None:
    """The galaxies' bulge, disc, clumps and PSF drawn with GalSim, bands weighted, noise added."""
    import galsim

    params = synth.draw_parameters(np.random.default_rng(0), n, size)
    deviate, noise = galsim.BaseDeviate(0), np.random.default_rng(1)
    weights = noise.uniform(0.5, 1.5, (n, len(bands), 3))
    for i in range(n):
        angle = params["position_angle"][i] * galsim.radians
        psf = galsim.Moffat(
            beta=synth.MOFFAT_BETAS[params["psf_beta"][i]], fwhm=params["psf_fwhm_pix"][i]
        )
        bulge = galsim.Sersic(
            n=float(np.clip(np.round(2 * params["sersic_n"][i]) / 2, 0.5, 6.0)),
            half_light_radius=params["bulge_radius"][i],
        ).shear(q=1 - params["bulge_ellipticity"][i], beta=angle)
        disc = galsim.Exponential(half_light_radius=params["r_eff_pix"][i]).shear(
            q=1 - params["ellipticity"][i], beta=angle
        )
        parts = [bulge, disc]
        if params["n_clumps"][i]:
            parts.append(
                galsim.RandomKnots(
                    int(params["n_clumps"][i]),
                    half_light_radius=params["r_eff_pix"][i],
                    rng=deviate,
                )
            )
        drawn = np.stack(
            [
                galsim.Convolve(part, psf).drawImage(nx=size, ny=size, scale=1.0).array
                for part in parts
            ]
        )
        image = np.tensordot(weights[i, :, : len(parts)], drawn, axes=1)
        image += 0.01 * noise.standard_normal(image.shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--bands", default="g,r,z")
    parser.add_argument("--galsim", type=int, default=0, help="also time GalSim on this many")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    bands = args.bands.split(",")
    synth.galaxy_block(0, 0, args.size, bands, 16)  # warm up: caches, lazy imports

    def render() -> None:
        for _ in synth.iter_galaxies(args.n, args.size, bands, seed=0):
            pass

    with tempfile.TemporaryDirectory() as folder:
        written = timed(lambda: synth.generate(f"{folder}/d", args.n, args.size, bands), args.n)
    result = {
        "size": args.size,
        "bands": bands,
        "n": args.n,
        "render": timed(render, args.n),
        "render_and_write": written,
        "load_average_1min": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.galsim:
        galsim_render(4, args.size, bands)  # warm up: imports, the PSF's tables
        result["galsim_core"] = timed(
            lambda: galsim_render(args.galsim, args.size, bands), args.galsim
        )
        result["galsim_version"] = version("galsim")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
