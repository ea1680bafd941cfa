"""python -m astropt.probe"""

import sys

from astropt.probe.cli import main

if __name__ == "__main__":
    sys.exit(main())
