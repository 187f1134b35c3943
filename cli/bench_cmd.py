"""``rig bench KIND``: benchmarks that need only the core (``throttle``).

The comparisons against fio and qemu-io live in ``bench/run.py`` (they drive external tools).
"""

from __future__ import annotations

import argparse

from rig.throttle import ratebench


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="bench", metavar="KIND", required=True)
    throttle = sub.add_parser("throttle", help="achieved rate vs limit of the throttle filter "
                              "(real clock); --plot draws it as a PNG")
    ratebench.add_arguments(throttle)
    throttle.set_defaults(run=ratebench.run)
