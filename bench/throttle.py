"""Throttle accuracy benchmark (real clock); the same as ``rig bench throttle``.

    .venv/bin/python bench/throttle.py [--quick] [--plot out.png]
"""

import sys

from rig.throttle.ratebench import main

sys.exit(main())
