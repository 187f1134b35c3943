"""The ``recorder`` filter logs exactly the requests that completed below it, in completion order,
and replaying its log reproduces the device."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

import rig
from rig.core.backend import BlockBackend
from rig.core.node import ReqFlags
from rig.core.registry import driver_class
from rig.crash.log_replay import replay
from rig.crash.logfile import read_log
from rig.crash.records import Kind, Record
from rig.errors import ConfigError
from rig.filters.recorder import RecorderFilter
from rig.filters.writecache import WriteCacheFilter
from rig.testing.ops import Op, Read, apply_to_backend
from rig.testing.strategies import workloads

SIZE = 64 * 1024


def open_rec(log: Path, child: dict[str, Any] | None = None, cache: str = "writeback",
             **options: Any) -> BlockBackend:
    child = child or {"driver": "memory", "size": SIZE}
    return rig.open({"driver": "recorder", "log": str(log), **options, "file": child},
                    cache=cache)


def rec_of(blk: BlockBackend) -> RecorderFilter:
    node = blk.root
    assert isinstance(node, RecorderFilter)
    return node


def test_registered_and_options_checked(tmp_path: Path) -> None:
    assert driver_class("recorder") is RecorderFilter
    assert not RecorderFilter.modifies_data
    with pytest.raises(ConfigError, match="doesn't support the option 'bogus'"):
        open_rec(tmp_path / "a.wlog", bogus=1)
    with pytest.raises(ConfigError, match="Parameter 'log' is missing"):
        rig.open({"driver": "recorder", "file": {"driver": "memory", "size": SIZE}})
    with pytest.raises(ConfigError, match="'compress' expects 'on' or 'off'"):
        open_rec(tmp_path / "a.wlog", compress="maybe")
    with pytest.raises(ConfigError, match="cannot create the write log"):
        open_rec(tmp_path / "no" / "such" / "dir.wlog")
    with open_rec(tmp_path / "b.wlog", compress="on",
                  child={"driver": "memory", "size": SIZE, "logical-block-size": 4096}) as blk:
        assert rec_of(blk).compress
    log = read_log(tmp_path / "b.wlog")
    assert (log.header.device_size, log.header.logical_block_size) == (SIZE, 4096)


def test_logs_what_reached_the_child_in_order_and_not_reads(tmp_path: Path) -> None:
    path = tmp_path / "r.wlog"
    child = {"driver": "writecache", "file": {"driver": "memory", "size": SIZE}}
    with open_rec(path, child) as blk:
        rec = rec_of(blk)
        blk.pwrite(0, b"a" * 4096)
        assert blk.pread(0, 4096) == b"a" * 4096
        rec.mark("one")
        blk.pwrite(4096, b"b" * 512, fua=True)
        blk.write_zeroes(8192, 4096, ReqFlags.MAY_UNMAP)
        blk.discard(12288, 4096)
        blk.flush()
        assert rec.mark("two") == 7
        blk.write_zeroes(0, 512, ReqFlags.FUA)
        wc = rec.child
        assert isinstance(wc, WriteCacheFilter)
        assert wc.counters().writes_through == 2  # the FUA flag reached the cache
    assert read_log(path).records == [
        Record(1, Kind.WRITE, 0, 4096, data=b"a" * 4096),
        Record(2, Kind.MARK, text="one"),
        Record(3, Kind.WRITE, 4096, 512, fua=True, data=b"b" * 512),
        Record(4, Kind.WRITE_ZEROES, 8192, 4096, may_unmap=True),
        Record(5, Kind.DISCARD, 12288, 4096),
        Record(6, Kind.FLUSH, covers=5),
        Record(7, Kind.MARK, text="two"),
        Record(8, Kind.WRITE_ZEROES, 0, 512, fua=True),
    ]


def test_writethrough_puts_fua_on_writes_and_unsafe_logs_no_durability(tmp_path: Path) -> None:
    for cache in ("writethrough", "unsafe"):
        path = tmp_path / f"{cache}.wlog"
        with open_rec(path, cache=cache) as blk:
            blk.pwrite(0, b"x" * 512)
            blk.pwrite(512, b"y" * 512, fua=True)
            blk.discard(4096, 4096)
            blk.flush()
        kinds = [(r.kind, r.fua) for r in read_log(path).records]
        if cache == "writethrough":  # the backend flushes after a discard
            assert kinds == [(Kind.WRITE, True), (Kind.WRITE, True), (Kind.DISCARD, False),
                             (Kind.FLUSH, False), (Kind.FLUSH, False)]
        else:
            assert kinds == [(Kind.WRITE, False), (Kind.WRITE, False), (Kind.DISCARD, False)]


def test_failed_requests_become_system_marks(tmp_path: Path) -> None:
    path = tmp_path / "f.wlog"
    child = {"driver": "faults", "file": {"driver": "memory", "size": SIZE},
             "rules": [{"action": "error", "op": "write", "nth": 2, "errno": "ENOSPC"}]}
    with open_rec(path, child) as blk:
        blk.pwrite(0, b"a" * 512)
        with pytest.raises(OSError) as exc:
            blk.pwrite(512, b"b" * 512)
        assert exc.value.errno == errno.ENOSPC
        blk.pwrite(1024, b"c" * 512)
        assert rec_of(blk).failed == 1
        with pytest.raises(OSError) as exc:
            blk.truncate(SIZE * 2)
        assert exc.value.errno == errno.ENOTSUP
    records = read_log(path).records
    assert [r.describe() for r in records] == [
        "#1 write [0, +512)", "#2 rig mark 'rig: failed write [512, +512): ENOSPC'",
        "#3 write [1024, +512)"]


def test_concurrent_requests_are_all_logged_and_replay_to_the_same_device(
        tmp_path: Path) -> None:
    path = tmp_path / "c.wlog"
    with open_rec(path) as blk:
        futures = [blk.submit(blk.pwrite, (i * 4096) % SIZE, bytes([i % 251]) * 4096)
                   for i in range(200)]
        for f in futures:
            f.result()
        blk.flush()
        want = blk.pread(0, SIZE)
    log = read_log(path)
    assert [r.seq for r in log.records] == list(range(1, 202))
    assert log.records[-1] == Record(201, Kind.FLUSH, covers=200)
    with rig.open({"driver": "memory", "size": SIZE}) as fresh:
        assert replay(log, fresh) == 201
        assert fresh.pread(0, SIZE) == want


def test_a_flush_covers_only_what_completed_before_it(tmp_path: Path) -> None:
    path = tmp_path / "o.wlog"
    with open_rec(path) as blk:
        rec = rec_of(blk)
        blk.pwrite(0, b"a" * 512)
        real_flush = rec.child.flush

        def flush_with_a_racing_write() -> None:
            blk.pwrite(512, b"b" * 512)  # completes while the flush is running
            real_flush()

        rec.child.flush = flush_with_a_racing_write  # type: ignore[method-assign]
        blk.flush()
    assert [r.describe() for r in read_log(path).records] == [
        "#1 write [0, +512)", "#2 write [512, +512)", "#3 flush (covers #1)"]


@settings(max_examples=40, deadline=None)
@given(ops=workloads(SIZE, 512, 8192, max_ops=30))
def test_replay_upto_n_reproduces_the_device_after_n_records(
        tmp_path_factory: pytest.TempPathFactory, ops: list[Op]) -> None:
    path = tmp_path_factory.mktemp("rec") / "w.wlog"
    seen: dict[int, bytes] = {0: bytes(SIZE)}
    with open_rec(path, {"driver": "memory", "size": SIZE, "logical-block-size": 512}) as blk:
        for op in ops:
            apply_to_backend(op, blk)
            if not isinstance(op, Read):
                seen[rec_of(blk).writer.last_seq] = blk.pread(0, SIZE)
    log = read_log(path)
    assert log.last_seq == max(seen)
    for n, want in seen.items():
        with rig.open({"driver": "memory", "size": SIZE}) as fresh:
            replay(log, fresh, upto=n)
            assert fresh.pread(0, SIZE) == want, f"after record {n}"
