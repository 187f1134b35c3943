"""The kernel's own FUSE request timeout (kernel 6.14+: /proc/sys/fs/fuse/*_request_timeout)
aborts the whole connection; the export answers ETIMEDOUT before it would (docs/qmp.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.drivers.export.device import (
    KERNEL_MARGIN_S,
    kernel_request_timeout,
    within_kernel_timeout,
)


def _sysctl(tmp_path: Path, default: str | None, cap: str | None) -> str:
    for name, value in (("default_request_timeout", default), ("max_request_timeout", cap)):
        if value is not None:
            (tmp_path / name).write_text(value + "\n")
    return str(tmp_path)


@pytest.mark.parametrize(("default", "cap", "seconds"), [
    ("0", "0", 0),          # this machine: none
    (None, None, 0),        # an older kernel: no such files
    ("60", "0", 60),
    ("60", "30", 30),       # capped
    ("0", "40", 40),        # a cap alone sets one
    ("5", "0", 15),         # never below the kernel's 15 s timer
    ("junk", "0", 0),
])
def test_the_kernel_timeout_as_the_kernel_computes_it(tmp_path: Path, default: str | None,
                                                     cap: str | None, seconds: int) -> None:
    assert kernel_request_timeout(_sysctl(tmp_path, default, cap)) == seconds


def test_the_export_answers_before_the_kernel_aborts() -> None:
    assert within_kernel_timeout(0.0, 0) == 0.0
    assert within_kernel_timeout(3.0, 0) == 3.0
    assert within_kernel_timeout(0.0, 60) == 60 - KERNEL_MARGIN_S
    assert within_kernel_timeout(3.0, 60) == 3.0
    assert within_kernel_timeout(100.0, 60) == 60 - KERNEL_MARGIN_S


def test_this_machine_reads_its_own_sysctl() -> None:
    if not Path("/proc/sys/fs/fuse/default_request_timeout").exists():
        pytest.skip("this kernel has no FUSE request timeout (before 6.14)")
    raw = int(Path("/proc/sys/fs/fuse/default_request_timeout").read_text())
    cap = int(Path("/proc/sys/fs/fuse/max_request_timeout").read_text())
    expected = min(x for x in (raw, cap) if x) if raw or cap else 0
    assert kernel_request_timeout() == (max(expected, 15) if expected else 0)


@pytest.mark.rig_needs("loop", "fuse")
def test_an_export_under_a_kernel_timeout_answers_a_parked_write_in_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel's timeout stood in for (this kernel has none set, and setting the sysctl
    would change every FUSE mount on the machine): 3 s, so the export answers after 1 s."""
    import errno
    import mmap
    import os
    import time

    import rig
    from rig.drivers.export import device, export

    monkeypatch.setattr(device, "kernel_request_timeout", lambda: 3)
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(1 << 20))
    spec = {"driver": "faults", "file": {"driver": "file", "filename": str(img)},
            "rules": [{"name": "bad", "action": "error", "op": "write", "errno": "EIO"}]}
    with rig.open(spec, on_write_error="stop") as blk, export(blk) as ex:
        buf = mmap.mmap(-1, 4096)
        fd = os.open(ex.path, os.O_RDWR | os.O_DIRECT)
        try:
            start = time.monotonic()
            with pytest.raises(OSError) as e:
                os.pwritev(fd, [buf], 0)
            took = time.monotonic() - start
        finally:
            os.close(fd)
        assert e.value.errno == errno.ETIMEDOUT and 0.9 < took < 5
        assert blk.parked == 1 and ex.operations.timed_out == 1
    assert blk.parked == 0  # failed by the teardown
