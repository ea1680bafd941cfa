"""The one exception the probe raises for input it cannot use."""


class ProbeInputError(ValueError):
    """Bad probe input (unknown or constant target, too few rows, missing weights, wrong images).

    The message names what was wrong and what was expected; the CLIs print it on one line and
    exit with code 2.
    """
