"""The chokepoint (BlockBackend) against the memory node and the file driver.

Recording and failing filters are defined here and stacked by hand over a memory node, so the
tests see exactly which requests the chokepoint passes down.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import rig
from rig.core.backend import BlockBackend, ErrorAction, IoStatus
from rig.core.node import Iov, ReqFlags
from rig.errors import ConfigError
from rig.filters.base import Filter
from rig.nodes.memory import MemoryNode
from rig.testing.ops import pattern

SIZE = 1 << 20
Call = tuple[str, int, int, ReqFlags]


class Recorder(Filter):
    """Records every request reaching it, and counts flushes."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[Call] = []
        self.flushes = 0
        self.read_delay = 0.0

    def _preadv(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        self.calls.append(("read", offset, length, flags))
        super()._preadv(offset, length, iov, flags)
        if self.read_delay:  # widen the window between an RMW's read and its write-back
            time.sleep(self.read_delay)

    def _pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        self.calls.append(("write", offset, length, flags))
        super()._pwritev(offset, length, iov, flags)

    def _write_zeroes(self, offset: int, length: int, flags: ReqFlags) -> None:
        self.calls.append(("zero", offset, length, flags))
        super()._write_zeroes(offset, length, flags)

    def _discard(self, offset: int, length: int) -> None:
        self.calls.append(("discard", offset, length, ReqFlags.NONE))
        super()._discard(offset, length)

    def _flush_to_os(self) -> None:
        self.flushes += 1

    def of(self, kind: str) -> list[Call]:
        return [c for c in self.calls if c[0] == kind]


class FailWrites(Filter):
    """Fails the next ``times`` writes with ``err`` before they reach the child."""

    def __init__(self, err: int, times: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.err = err
        self.times = times
        self.attempts = 0

    def _pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        self.attempts += 1
        if self.times:
            self.times -= 1
            raise OSError(self.err, os.strerror(self.err))
        super()._pwritev(offset, length, iov, flags)


def stack(top: Filter, below: MemoryNode) -> Filter:
    top.attach_child("file", below)
    return top


def recorded(size: int = SIZE, lbs: int = 1, max_transfer: int = 0,
             **backend: Any) -> tuple[BlockBackend, Recorder]:
    rec = Recorder()
    stack(rec, MemoryNode(size, logical_block_size=lbs, max_transfer=max_transfer))
    return BlockBackend(rec, **backend), rec


@pytest.fixture(params=["memory", "file", "file-direct"])
def blk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlockBackend]:
    """A 1 MiB device: the memory node, a sparse file, or the same file with O_DIRECT."""
    if request.param == "memory":
        spec: dict[str, Any] = {"driver": "memory", "size": SIZE}
        cache = "writeback"
    else:
        path = tmp_path / "disk.img"
        with open(path, "wb") as f:
            f.truncate(SIZE)
        spec = {"driver": "file", "filename": str(path)}
        cache = "none" if request.param == "file-direct" else "writeback"
    with rig.open(spec, cache=cache) as b:
        yield b


# ------------------------------------------------------------------- bounds and flags
@pytest.mark.parametrize(("offset", "length"), [
    (SIZE, 1), (SIZE - 1, 2), (SIZE + 4096, 0), (-1, 1), (0, -1), (-4096, 4096),
])
def test_out_of_bounds_requests_fail_with_eio(blk: BlockBackend, offset: int,
                                              length: int) -> None:
    calls: list[Callable[[], object]] = [lambda: blk.write_zeroes(offset, length),
             lambda: blk.discard(offset, length),
             lambda: blk.block_status(offset, length)]
    if length >= 0:  # buffers cannot have a negative length
        calls += [lambda: blk.preadv(offset, [bytearray(length)]),
                  lambda: blk.pwrite(offset, bytes(length))]
    for call in calls:
        with pytest.raises(OSError) as exc:
            call()
        assert exc.value.errno == errno.EIO
    assert blk.stats.invalid == len(calls)
    assert blk.stats.by_op["write"].ops == 0


def test_request_ending_exactly_at_the_end_is_valid(blk: BlockBackend) -> None:
    blk.pwrite(SIZE - 3, b"end")
    assert blk.pread(SIZE - 4, 4) == b"\0end"
    assert blk.pread(SIZE, 0) == b""
    assert blk.stats.invalid == 0


def test_read_only_backend_refuses_every_write_verb() -> None:
    node = MemoryNode(SIZE)
    with BlockBackend(node, read_only=True) as b:
        calls: list[Callable[[], object]] = [
            lambda: b.pwrite(0, b"x"), lambda: b.write_zeroes(0, 512),
            lambda: b.discard(0, 512), lambda: b.truncate(SIZE // 2)]
        for call in calls:
            with pytest.raises(OSError) as exc:
                call()
            assert exc.value.errno == errno.EPERM
        assert b.pread(0, 4) == bytes(4)
        assert b.getlength() == SIZE


def test_read_only_option_reaches_the_backend() -> None:
    with rig.open({"driver": "memory", "size": "64k"}, read_only=True) as b:
        assert b.read_only
        with pytest.raises(OSError) as exc:
            b.pwrite(0, b"x")
        assert exc.value.errno == errno.EPERM


def test_flags_are_validated_per_verb() -> None:
    b, rec = recorded()
    with pytest.raises(ValueError, match="no flags"):
        b.preadv(0, [bytearray(4)], ReqFlags.FUA)
    with pytest.raises(ValueError, match="only FUA"):
        b.pwritev(0, [b"abcd"], ReqFlags.MAY_UNMAP)
    with pytest.raises(ValueError, match="write_zeroes accepts"):
        b.write_zeroes(0, 4, ReqFlags(8))  # a bit no flag names
    with pytest.raises(ValueError, match="only FUA"):
        b.pwritev(0, [b"abcd"], ReqFlags(16) | ReqFlags.FUA)
    assert rec.calls == []
    b.write_zeroes(0, 4, ReqFlags.MAY_UNMAP | ReqFlags.FUA)
    assert rec.of("zero") == [("zero", 0, 4, ReqFlags.MAY_UNMAP)]  # FUA emulated by a flush
    assert rec.flushes == 1


def test_unaligned_write_zeroes_with_no_fallback_is_enotsup() -> None:
    b, rec = recorded(lbs=4096)
    with pytest.raises(OSError) as exc:
        b.write_zeroes(100, 4096, ReqFlags.NO_FALLBACK)
    assert exc.value.errno == errno.ENOTSUP
    assert rec.of("write") == []
    b.write_zeroes(4096, 8192, ReqFlags.NO_FALLBACK)
    assert rec.of("zero") == [("zero", 4096, 8192, ReqFlags.NO_FALLBACK)]


# ---------------------------------------------------------------- splitting
def test_requests_are_split_at_max_transfer_with_fua_on_the_last_piece_only() -> None:
    b, rec = recorded(lbs=512, max_transfer=8192)
    assert b.limits.max_transfer == 8192
    data = pattern(7, 20480)
    b.pwrite(4096, data, fua=True)
    assert rec.of("write") == [
        ("write", 4096, 8192, ReqFlags.NONE),
        ("write", 12288, 8192, ReqFlags.NONE),
        ("write", 20480, 4096, ReqFlags.NONE),  # the memory node emulates FUA by flushing
    ]
    assert rec.flushes == 1
    rec.calls.clear()
    assert b.pread(4096, 20480) == data
    assert [c[1:3] for c in rec.of("read")] == [(4096, 8192), (12288, 8192), (20480, 4096)]


def test_unaligned_read_is_split_through_the_bounce_buffer() -> None:
    b, rec = recorded(lbs=4096, max_transfer=8192)
    b.pwrite(0, pattern(3, 32768))
    rec.calls.clear()
    assert b.pread(100, 20000) == pattern(3, 32768)[100:20100]
    assert [c[1:3] for c in rec.of("read")] == [(0, 8192), (8192, 8192), (16384, 4096)]


# ---------------------------------------------------------------- alignment and RMW
def test_unaligned_write_preserves_neighbours_by_read_modify_write() -> None:
    b, rec = recorded(lbs=4096)
    before = pattern(1, 3 * 4096)
    b.pwrite(0, before)
    rec.calls.clear()
    b.pwrite(4090, b"0123456789AB")  # straddles the boundary at 4096
    # The padding reads carry the internal PADDING flag (a format above does not count them as
    # guest reads: no read_aio event).
    assert rec.of("read") == [("read", 0, 4096, ReqFlags.PADDING),
                              ("read", 4096, 4096, ReqFlags.PADDING)]
    assert rec.of("write") == [("write", 0, 8192, ReqFlags.NONE)]
    after = b.pread(0, 3 * 4096)
    assert after[4090:4102] == b"0123456789AB"
    assert after[:4090] == before[:4090]
    assert after[4102:] == before[4102:]


def test_unaligned_write_within_one_block_reads_it_once() -> None:
    b, rec = recorded(lbs=4096)
    b.pwrite(8192 + 10, b"xy")
    assert rec.of("read") == [("read", 8192, 4096, ReqFlags.PADDING)]
    assert rec.of("write") == [("write", 8192, 4096, ReqFlags.NONE)]
    assert b.pread(8192, 16) == bytes(10) + b"xy" + bytes(4)


def test_unaligned_discard_goes_down_in_pieces_as_in_qemu() -> None:
    b, rec = recorded(lbs=4096)
    data = pattern(9, 4 * 4096)
    b.pwrite(0, data)
    b.discard(4096, 2 * 4096)
    assert rec.of("discard") == [("discard", 4096, 8192, ReqFlags.NONE)]
    # The unaligned head piece goes down first; a block-granular node refuses it as BLKDISCARD
    # does (qemu-io on a block device prints "discard failed: Invalid argument" for this).
    with pytest.raises(OSError) as e:
        b.discard(100, 3 * 4096)
    assert e.value.errno == errno.EINVAL
    assert rec.of("discard")[-1] == ("discard", 100, 3996, ReqFlags.NONE)
    after = b.pread(0, 4 * 4096)
    assert after[:4096] == data[:4096]
    assert after[4096:12288] == bytes(8192)
    assert after[12288:] == data[12288:]


def test_unaligned_discard_on_a_file_punches_exactly_the_range(tmp_path: Path) -> None:
    path = tmp_path / "d.img"
    path.write_bytes(pattern(3, 65536))
    with rig.open({"driver": "file", "filename": str(path)}, cache="none") as b:
        b.discard(1000, 60000)
        after = b.pread(0, 65536)
    assert after[1000:61000] == bytes(60000)
    assert after[:1000] == pattern(3, 65536)[:1000]
    assert after[61000:] == pattern(3, 65536)[61000:]


def test_unaligned_write_zeroes_writes_the_edges_and_zeroes_the_middle() -> None:
    b, rec = recorded(lbs=4096)
    b.pwrite(0, b"\xff" * 16384)
    rec.calls.clear()
    b.write_zeroes(1000, 10000)
    assert rec.of("zero") == [("zero", 4096, 4096, ReqFlags.NONE)]
    assert [c[1:3] for c in rec.of("write")] == [(0, 4096), (8192, 4096)]
    after = b.pread(0, 16384)
    assert after == b"\xff" * 1000 + bytes(10000) + b"\xff" * 5384


def test_file_with_o_direct_does_rmw_for_unaligned_writes(tmp_path: Path) -> None:
    path = tmp_path / "d.img"
    path.write_bytes(pattern(5, 65536))
    with rig.open({"driver": "file", "filename": str(path)}, cache="none") as b:
        assert b.limits.request_alignment >= 512
        b.pwrite(511, b"ab")
        b.flush()
    want = bytearray(pattern(5, 65536))
    want[511:513] = b"ab"
    assert path.read_bytes() == want


def test_overlapping_unaligned_writes_from_threads_never_lose_data() -> None:
    """Each thread writes its own bytes inside shared 4 KiB blocks. Without the tracked
    requests serializing the read-modify-writes, one thread's RMW would write back a stale
    block over another's byte (the slowed reads make that window wide)."""
    b, rec = recorded(size=4 * 4096, lbs=4096)
    rec.read_delay = 0.0005
    threads, rounds = 8, 6
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for r in range(rounds):
                for block in range(4):
                    b.pwrite(block * 4096 + 2047 + t * 17 + r, bytes([t * 16 + r + 1]))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert not errors
    content = b.pread(0, 4 * 4096)
    lost = [(t, r, block) for block in range(4) for t in range(threads) for r in range(rounds)
            if content[block * 4096 + 2047 + t * 17 + r] != t * 16 + r + 1]
    assert lost == [], f"lost writes (thread, round, block): {lost[:5]}"
    assert b._tracker.in_flight() == 0


# ------------------------------------------------------------------ cache modes
def test_writethrough_makes_every_write_verb_reach_a_flush() -> None:
    b, rec = recorded(lbs=512, write_cache=False)
    b.pwrite(0, b"x" * 512)
    assert rec.flushes == 1
    b.pwrite(1000, b"unaligned")  # RMW, still one flush
    assert rec.flushes == 2
    b.write_zeroes(0, 4096)
    assert rec.flushes == 3
    b.discard(0, 4096)
    assert rec.flushes == 4


def test_writeback_flushes_only_on_request_or_fua() -> None:
    b, rec = recorded(lbs=512)
    b.pwrite(0, b"x" * 512)
    b.write_zeroes(0, 4096)
    b.discard(0, 4096)
    assert rec.flushes == 0
    b.pwrite(0, b"y" * 512, fua=True)
    assert rec.flushes == 1
    b.flush()
    assert rec.flushes == 2
    assert b.stats.by_op["flush"].ops == 1


# ----------------------------------------------------------------- error policy
def failing(err: int = errno.ENOSPC, times: int = 1,
            **backend: Any) -> tuple[BlockBackend, FailWrites, MemoryNode]:
    mem = MemoryNode(SIZE)
    fail = FailWrites(err, times)
    stack(fail, mem)
    return BlockBackend(fail, **backend), fail, mem


def test_report_raises_the_original_errno_and_leaves_iostatus_ok() -> None:
    b, _, _ = failing(errno.ENOSPC)
    with pytest.raises(OSError) as exc:
        b.pwrite(0, b"data")
    assert exc.value.errno == errno.ENOSPC
    assert b.iostatus is IoStatus.OK
    assert b.stats.by_op["write"].failed == 1
    assert b.stats.by_op["write"].ops == 0
    b.pwrite(0, b"data")  # failed only once
    assert b.pread(0, 4) == b"data"


def test_ignore_swallows_the_error_and_the_data_is_not_written() -> None:
    b, fail, _ = failing(errno.EIO, on_write_error="ignore")
    b.pwrite(0, b"data")
    assert fail.attempts == 1
    assert b.pread(0, 4) == bytes(4)
    assert b.stats.by_op["write"].failed == 1
    assert b.iostatus is IoStatus.OK


def run_parked(b: BlockBackend, fail: FailWrites, expect: IoStatus) -> None:
    """Start a write that the stop policy parks, check the parked state, resume it."""
    done = threading.Event()

    def write() -> None:
        b.pwrite(0, b"data")
        done.set()

    th = threading.Thread(target=write)
    th.start()
    wait_paused(b)
    assert state(b) == (True, expect)
    assert not done.is_set()
    assert fail.attempts == 1
    b.resume()
    th.join(5)
    assert done.is_set()
    assert fail.attempts == 2
    assert state(b) == (False, IoStatus.OK)
    assert b.pread(0, 4) == b"data"


def state(b: BlockBackend) -> tuple[bool, IoStatus]:
    return b.paused, b.iostatus


def wait_paused(b: BlockBackend) -> None:
    deadline = time.monotonic() + 5
    while not b.paused and time.monotonic() < deadline:
        time.sleep(0.001)


def test_stop_parks_the_request_until_resume_retries_it() -> None:
    b, fail, _ = failing(errno.EIO, on_write_error="stop")
    run_parked(b, fail, IoStatus.FAILED)


def test_enospc_policy_stops_on_enospc() -> None:
    b, fail, _ = failing(errno.ENOSPC, on_write_error=ErrorAction.ENOSPC)
    run_parked(b, fail, IoStatus.NOSPACE)


def test_enospc_policy_reports_other_errors() -> None:
    b, _, _ = failing(errno.EIO, on_write_error="enospc")
    with pytest.raises(OSError) as exc:
        b.pwrite(0, b"data")
    assert exc.value.errno == errno.EIO
    assert not b.paused
    assert b.iostatus is IoStatus.OK


def test_close_releases_a_parked_request_with_its_error() -> None:
    b, _, _ = failing(errno.ENOSPC, times=10, on_write_error="stop")
    caught: list[OSError] = []

    def write() -> None:
        try:
            b.pwrite(0, b"data")
        except OSError as e:
            caught.append(e)

    th = threading.Thread(target=write)
    th.start()
    wait_paused(b)
    assert b.paused
    b.close()
    th.join(5)
    assert not th.is_alive()
    assert [e.errno for e in caught] == [errno.ENOSPC]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"on_read_error": "enospc"}, "only to writes"),
    ({"on_write_error": "retry"}, "one of report, ignore, stop, enospc"),
])
def test_bad_error_policies_are_config_errors(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BlockBackend(MemoryNode(4096), **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------- bitmaps and stats
def test_dirty_bitmap_marks_every_written_granule() -> None:
    b, _ = recorded()
    bm = b.add_dirty_bitmap(granularity=4096)
    b.pwrite(5000, b"x" * 10)
    b.write_zeroes(65536, 8192)
    b.discard(200000, 1)
    assert bm.extents() == [(4096, 4096), (65536, 8192), (196608, 4096)]
    assert bm.count() == 4 * 4096
    b.pread(300000, 4096)
    b.flush()
    assert bm.count() == 4 * 4096
    with pytest.raises(OSError):
        b.pwrite(SIZE, b"x")  # rejected before it could change anything
    assert bm.count() == 4 * 4096


def test_dirty_bitmap_marks_a_failed_write() -> None:
    """As QEMU's bdrv_co_write_req_finish: a failed write may have changed the range."""
    b, _, _ = failing(errno.EIO)
    bm = b.add_dirty_bitmap(granularity=512)
    with pytest.raises(OSError):
        b.pwrite(1024, b"x")
    assert bm.extents() == [(1024, 512)]


def test_stats_count_ops_bytes_and_highest_write(blk: BlockBackend) -> None:
    blk.pwrite(4096, b"a" * 8192)
    blk.pwrite(0, b"b" * 100)
    blk.pread(0, 300)
    blk.write_zeroes(65536, 4096)
    blk.discard(0, 4096)
    blk.flush()
    s = blk.stats.as_dict()
    assert (s["write_ops"], s["write_bytes"]) == (2, 8292)
    assert (s["read_ops"], s["read_bytes"]) == (1, 300)
    assert (s["zero_ops"], s["zero_bytes"]) == (1, 4096)
    assert (s["discard_ops"], s["discard_bytes"]) == (1, 4096)
    assert s["flush_ops"] == 1
    assert s["wr_highest_offset"] == 69632
    assert s["invalid"] == 0
    assert s["write_failed"] == 0


def test_data_round_trips_through_every_verb(blk: BlockBackend) -> None:
    blk.pwrite(1, pattern(11, 70000))
    assert blk.pread(1, 70000) == pattern(11, 70000)
    blk.write_zeroes(3, 5, ReqFlags.MAY_UNMAP)
    want = bytearray(b"\0" + pattern(11, 70000))
    want[3:8] = bytes(5)
    assert blk.pread(0, 10) == want[:10]
    blk.discard(4096, 16384)
    assert blk.pread(4096, 16384) == bytes(16384)
    assert blk.pread(20480, 10) == pattern(11, 20490)[20479:20489]
