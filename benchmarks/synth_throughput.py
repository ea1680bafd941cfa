"""Throughput of the synthetic galaxy generator, rendering only and rendering + writing shards.

Reports images per second of wall time and per second of CPU time (all threads of this
process); on a busy machine the CPU figure is the one-core rate. Writes
``benchmarks/results/synth_throughput.json``.

    python benchmarks/synth_throughput.py --n 4096 --size 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--bands", default="g,r,z")
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
