"""Crash-consistency testing from pytest with ``rig_crash``: a complete example.

A tiny on-disk log: records in 4 KiB pages from offset 4096 on, and a header page at offset 0
that says how many records are committed. Committing record N writes its page, then the header
(count N). Whether that survives a power cut depends on one flush: the careful version flushes
the record before it writes the header; the careless one writes both and flushes once. The
fixture records each version's I/O on a real exported device, puts every state a power cut
could leave on a real device, and runs the check on it.

Run ``pytest examples/test_crash_consistency.py`` as root (loop devices and FUSE; elsewhere it
skips and says why). tests/plugin/test_examples.py runs this file so it stays true.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from rig.fixtures.crash_fixture import CrashPoint, CrashReport, CrashRun

PAGE = 4096
MAGIC = b"LOG!"
RECORDS = 3


def record_page(n: int) -> bytes:
    return f"record {n}\n".encode().ljust(PAGE, b".")


def commit_all(run: CrashRun, *, flush_before_header: bool) -> None:
    fd = os.open(run.path, os.O_RDWR)
    try:
        for n in range(RECORDS):
            os.pwrite(fd, record_page(n), PAGE * (n + 1))
            if flush_before_header:
                os.fsync(fd)  # the record is on the medium before the header names it
            os.pwrite(fd, MAGIC + struct.pack("<I", n + 1), 0)
            os.fsync(fd)
            run.mark(f"committed {n + 1}")  # what the program has promised from here on
    finally:
        os.close(fd)


def check_log(point: CrashPoint) -> None:
    """Every record the header counts is whole, and no committed record is lost."""
    with open(point.path, "rb") as f:
        header = f.read(8)
        count = struct.unpack("<I", header[4:])[0] if header[:4] == MAGIC else 0
        for n in range(count):
            f.seek(PAGE * (n + 1))
            assert f.read(PAGE) == record_page(n), f"record {n} is counted but not on the disk"
    promised = int(point.mark.split()[1]) if point.mark else 0
    assert count >= promised, f"{promised} records were committed, the header counts {count}"


def test_a_header_written_after_a_flush_survives_every_power_cut(
        rig_crash: Callable[..., CrashReport]) -> None:
    report = rig_crash(lambda run: commit_all(run, flush_before_header=True), check_log)
    assert report.ok and report.checked >= RECORDS


def test_a_header_written_before_the_flush_is_caught(
        rig_crash: Callable[..., CrashReport]) -> None:
    """``fail=False`` returns the failures instead of failing the test: here they are the
    point. Shrinking names the one write whose loss breaks the log: a record page."""
    report = rig_crash(lambda run: commit_all(run, flush_before_header=False), check_log,
                       fail=False)
    assert not report.ok
    first = report.failures[0]
    assert "is counted but not on the disk" in first.error
    assert first.shrunk is not None and len(first.dropped) == 1
