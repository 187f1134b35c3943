"""A bug inside the graph (an exception that is not an OSError) fails only that request, with
EIO, and one line on stderr: no traceback from the FUSE layer, no EINVAL for the program."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

import rig
from rig.drivers.export import export
from rig.nodes.memory import MemoryNode

pytestmark = pytest.mark.rig_needs("loop", "fuse")

BAD = 64 * 1024


def test_a_non_oserror_in_the_graph_is_eio_and_one_line(
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    real = MemoryNode._preadv

    def buggy(self: MemoryNode, offset: int, length: int, iov: Any, flags: Any) -> None:
        if offset <= BAD < offset + length:
            raise ValueError("a bug in the graph\nsecond line")
        real(self, offset, length, iov, flags)

    monkeypatch.setattr(MemoryNode, "_preadv", buggy)
    with rig.open({"driver": "memory", "size": 1 << 20}) as blk, export(blk) as ex:
        for _ in range(2):
            bad = subprocess.run(["dd", f"if={ex.path}", "of=/dev/null", "bs=4k", "count=1",
                                  f"skip={BAD // 4096}", "iflag=direct"],
                                 capture_output=True, text=True, timeout=60)
            assert bad.returncode == 1 and "Input/output error" in bad.stderr, bad.stderr
        good = subprocess.run(["dd", f"if={ex.path}", "of=/dev/null", "bs=4k", "count=1",
                               "iflag=direct"], capture_output=True, text=True, timeout=60)
        assert good.returncode == 0, good.stderr
        assert ex.operations.internal_errors >= 2
    err = capfd.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "internal error" in line]
    assert lines == ["rig export: internal error in read (ValueError: a bug in the graph); "
                     "the request failed with EIO"], err
