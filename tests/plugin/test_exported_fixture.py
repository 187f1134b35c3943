"""The ``rig_exported`` fixture: a faulty graph as a real block device under dd."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from rig.core.backend import BlockBackend


@pytest.mark.rig_needs("loop", "fuse")
def test_dd_hits_an_injected_error_on_the_exported_device(
        rig_faulty: Callable[..., BlockBackend], rig_exported: Callable[..., Any]) -> None:
    blk = rig_faulty([{"event": "none", "sector": 16, "iotype": "read", "errno": errno.EIO}],
                     on="memory", size="4M")
    ex = rig_exported(blk)
    assert os.path.exists(ex.path) and ex.path.startswith("/dev/loop")

    def dd(skip_blocks: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["dd", f"if={ex.path}", "of=/dev/null", "bs=4k", "count=1",
                               f"skip={skip_blocks}", "iflag=direct"],
                              capture_output=True, text=True, timeout=60)

    assert dd(1).returncode == 0
    bad = dd(2)  # sector 16 = byte 8192 = the third 4 KiB block
    assert bad.returncode == 1 and "Input/output error" in bad.stderr
