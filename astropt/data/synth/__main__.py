"""``python -m astropt.data.synth``: write a synthetic data set."""

from astropt.data.synth.cli import main

main()
