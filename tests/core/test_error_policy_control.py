"""The error policy's controls on a real graph (a ``faults`` node over RAM, rules armed and
disarmed as a user does), with requests from several threads: what QMP's ``stop``, ``cont`` and
``x-rig-fail-stopped`` call (``pause``, ``resume``, ``fail_stopped``), ``end_stops`` (an export's
teardown), the events listeners get, and the stats under QEMU's names."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import rig
from rig.core.backend import BlockBackend, IoStatus, PolicyEvent
from rig.faults.rules import Error, Rule
from rig.filters.faults import find_faults

KiB = 1024


@pytest.fixture
def blk() -> Iterator[BlockBackend]:
    with rig.open({"driver": "faults", "rules": [],
                   "file": {"driver": "memory", "size": 1 << 20}},
                  on_write_error="stop", on_read_error="ignore") as b:
        yield b


def background(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())
        except OSError as e:
            out.append(e)

    t = threading.Thread(target=run)
    t.start()
    return t, out


def until(cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def test_pause_holds_new_requests_until_resume(blk: BlockBackend) -> None:
    events: list[str] = []
    blk.listeners.append(lambda ev: events.append(ev.kind))
    blk.pause()
    t, out = background(lambda: blk.pwrite(0, b"a" * 512))
    time.sleep(0.2)
    assert out == [] and blk.paused and blk.parked == 0  # waiting, not parked
    assert blk.stats.by_op["write"].ops == 0
    blk.resume()
    t.join(5)
    assert out == [None] and events == ["stop", "resume"]
    assert blk.pread(0, 512) == b"a" * 512


def test_fail_stopped_fails_each_parked_request_with_its_error(blk: BlockBackend) -> None:
    faults = find_faults(blk.root)
    faults.add_rule(Rule(Error("ENOSPC"), name="full", op="write", start=0, end=4 * KiB))
    faults.add_rule(Rule(Error("EIO"), name="bad", op="write", start=8 * KiB, end=12 * KiB))
    seen: list[PolicyEvent] = []
    blk.listeners.append(seen.append)
    t1, out1 = background(lambda: blk.pwrite(0, b"x" * 512))
    until(lambda: blk.parked == 1)
    assert blk.iostatus is IoStatus.NOSPACE  # the first error sets it
    # A request that comes while the device is stopped waits before it starts (not parked).
    t2, out2 = background(lambda: blk.pwrite(8 * KiB, b"y" * 512))
    time.sleep(0.1)
    assert blk.parked == 1 and out2 == []
    blk.fail_stopped()
    t1.join(5)
    assert isinstance(out1[0], OSError) and out1[0].errno == errno.ENOSPC
    # The waiting write now runs, fails with EIO and parks in turn.
    until(lambda: blk.parked == 1)
    assert blk.iostatus is IoStatus.FAILED
    faults.disable("bad")
    blk.resume()
    t2.join(5)
    assert out2 == [None] and blk.pread(8 * KiB, 512) == b"y" * 512
    kinds = [(e.kind, e.op, e.errno, e.action) for e in seen]
    assert kinds == [("io-error", "write", errno.ENOSPC, "stop"), ("stop", "", 0, ""),
                     ("resume", "", 0, ""),
                     ("io-error", "write", errno.EIO, "stop"), ("stop", "", 0, ""),
                     ("resume", "", 0, "")]
    assert seen[0].offset == 0 and seen[0].length == 512 and seen[3].offset == 8 * KiB


def test_end_stops_fails_parked_requests_and_reports_from_then_on(blk: BlockBackend) -> None:
    find_faults(blk.root).add_rule(Rule(Error("EIO"), name="bad", op="write"))
    t, out = background(lambda: blk.pwrite(0, b"x" * 512))
    until(lambda: blk.parked == 1)
    blk.end_stops()
    t.join(5)
    assert isinstance(out[0], OSError) and out[0].errno == errno.EIO
    with pytest.raises(OSError) as e:
        blk.pwrite(0, b"x" * 512)  # reported at once now, not parked
    assert e.value.errno == errno.EIO and not blk.paused


def test_ignore_and_the_events_for_reads(blk: BlockBackend) -> None:
    seen: list[PolicyEvent] = []
    blk.listeners.append(seen.append)
    find_faults(blk.root).add_rule(Rule(Error("EIO"), name="r", op="read"))
    assert blk.pread(0, 512) == bytes(512)  # ignored: "succeeds"
    assert [(e.kind, e.op, e.action) for e in seen] == [("io-error", "read", "ignore")]


def test_close_with_a_request_waiting_on_a_pause(blk: BlockBackend) -> None:
    blk.pause()
    t, out = background(lambda: blk.pwrite(0, b"x" * 512))
    time.sleep(0.1)
    blk.close()
    t.join(5)
    assert isinstance(out[0], OSError) and out[0].errno == errno.EIO
    assert "stopped when it was closed" in str(out[0])


def test_stats_under_qemus_names(blk: BlockBackend) -> None:
    blk.pwrite(0, b"a" * 4096)
    blk.write_zeroes(8192, 4096)
    blk.discard(0, 4096)
    blk.flush()
    blk.pread(0, 1024)
    with pytest.raises(OSError):
        blk.pread(1 << 20, 512)  # past the end: invalid
    s = blk.stats.as_qemu()
    assert (s["wr_operations"], s["wr_bytes"], s["wr_highest_offset"]) == (2, 8192, 12288)
    assert (s["unmap_operations"], s["unmap_bytes"], s["flush_operations"]) == (1, 4096, 1)
    assert (s["rd_operations"], s["rd_bytes"], s["invalid_rd_operations"]) == (1, 1024, 1)
    assert s["invalid_wr_operations"] == 0 and s["failed_wr_operations"] == 0
    assert s["idle_time_ns"] >= 0 and s["timed_stats"] == []
    assert {k for k in s if k.startswith(("rd_", "wr_", "unmap_", "flush_"))} == {
        "rd_bytes", "rd_operations", "rd_total_time_ns", "rd_merged",
        "wr_bytes", "wr_operations", "wr_total_time_ns", "wr_merged", "wr_highest_offset",
        "unmap_bytes", "unmap_operations", "unmap_total_time_ns", "unmap_merged",
        "flush_operations", "flush_total_time_ns"}
