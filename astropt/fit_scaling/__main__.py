"""python -m astropt.fit_scaling"""

from astropt.fit_scaling.cli import main

raise SystemExit(main())
