"""QEMU's ``error_report`` for the qcow2 node: one line on stderr, after the program's name.

The name is ``$RIG_IO_NAME`` when set (``rig io`` under QEMU's iotests runs as ``qemu-io``, so
golden files match), else ``rig``.
"""

from __future__ import annotations

import os
import sys


def error_report(message: str) -> None:
    name = os.environ.get("RIG_IO_NAME") or "rig"
    sys.stderr.write(f"{name}: {message}\n")
    sys.stderr.flush()
