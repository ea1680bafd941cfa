"""Run a model-size x token-budget grid of astroPT trainings (see `--help`)."""

import sys

from astropt.sweep.cli import main

if __name__ == "__main__":
    sys.exit(main())
