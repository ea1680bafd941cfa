"""python -m astropt.probe"""

from astropt.probe.cli import main

raise SystemExit(main())
