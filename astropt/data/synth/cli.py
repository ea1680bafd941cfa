"""Synthetic multi-band galaxy cutouts, written as a shard set.

The command line, ``python -m astropt.data.synth``; the paragraph above is its help's
description.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from astropt.data.synth.write import generate, iter_galaxies, save_preview


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: write a synthetic data set."""
    parser = argparse.ArgumentParser(
        prog="python -m astropt.data.synth", description=__doc__.split("\n\n")[0]
    )
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
