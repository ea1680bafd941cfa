"""python -m astropt.train"""

import sys

from astropt.train.cli import main

sys.exit(main())
