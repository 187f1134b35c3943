"""The small write log the crash CLI tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.crash.logfile import LogWriter

SIZE = 64 * 1024


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """Two durable writes, then three in flight: cut points 1, 2 and 6; records 4-6 in flight
    at cut 6 (4 has two 512-byte sectors)."""
    path = tmp_path / "run.rwlog"
    with LogWriter(path, device_size=SIZE, logical_block_size=512) as w:
        w.write(0, b"\x01" * 4096)
        w.flush()
        w.write(4096, b"\x02" * 4096, fua=True)
        w.write(8192, b"\x03" * 1024)
        w.write(0, b"\x04" * 512)
        w.write(16384, b"\x05" * 512)
    return path
