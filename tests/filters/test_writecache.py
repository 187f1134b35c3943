"""The ``writecache`` filter: a disk with a volatile write cache, checked against the DiskModel.

Unit tests pin each rule (visibility, flush, FUA, WCE, zeroes and discards, cache modes,
cache-size, power-cut policies); a Hypothesis state machine drives random requests and power cuts
and checks every post-cut device against ``DiskModel.power_cut_violations``; a real loop device
over an export shows which cache modes make a host_device flush reach the storage as fsync.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule, run_state_machine_as_test

import rig
from rig.core.backend import BlockBackend
from rig.core.cache import CACHE_MODES
from rig.core.node import BlockStatus, ReqFlags
from rig.core.registry import driver_class
from rig.errors import ConfigError
from rig.filters.base import Filter
from rig.filters.writecache import WriteCacheFilter
from rig.testing import profiles
from rig.testing.machines import BlockDeviceMachine, first_difference
from rig.testing.model import DiskModel
from rig.testing.ops import Discard, Flush, Op, Write, WriteZeroes, apply_to_backend, apply_to_model
from rig.testing.strategies import CACHE_MODE_NAMES, cache_modes, power_cut_policies, workloads

SIZE = 64 * 1024
A, B, C = b"A" * 4096, b"B" * 4096, b"C" * 4096


def open_wc(cache: str = "writeback", lbs: int = 1, size: int = SIZE,
            opts: dict[str, Any] | None = None, **options: Any) -> BlockBackend:
    """A ``writecache`` over a ``memory`` node; ``opts`` for option names with a dash."""
    spec = {"driver": "writecache", **(opts or {}), **options,
            "file": {"driver": "memory", "size": size, "logical-block-size": lbs}}
    return rig.open(spec, cache=cache)


def wc_of(blk: BlockBackend) -> WriteCacheFilter:
    node = blk.root
    assert isinstance(node, WriteCacheFilter)
    return node


def media(blk: BlockBackend, offset: int = 0, length: int = 3 * 4096) -> bytes:
    """What the media (the filter's child) holds, read past the cache."""
    buf = bytearray(length)
    wc_of(blk).child.preadv(offset, length, [memoryview(buf)])
    return bytes(buf)


@pytest.fixture
def blk() -> Iterator[BlockBackend]:
    with open_wc() as b:
        yield b


# ------------------------------------------------------------------------ graph and options
def test_registered_as_a_data_modifying_filter_that_overrides_every_data_verb() -> None:
    assert driver_class("writecache") is WriteCacheFilter
    assert WriteCacheFilter.modifies_data
    for verb in Filter.DATA_VERBS:
        assert getattr(WriteCacheFilter, verb) is not getattr(Filter, verb), verb


def test_options_are_typed_and_unknown_ones_refused() -> None:
    with open_wc(opts={"wce": "off", "cache-size": "8k", "policy": "random", "seed": "7"}) as b:
        node = wc_of(b)
        assert (node.wce, node.cache_size, node.policy, node.seed) == (False, 8192, "random", 7)
    with pytest.raises(ConfigError, match="doesn't support the option 'bogus'"):
        open_wc(bogus=1)
    with pytest.raises(ConfigError, match="'policy' does not accept value 'some'"):
        open_wc(policy="some")
    with pytest.raises(ConfigError, match="'wce' expects 'on' or 'off'"):
        open_wc(wce="maybe")
    with pytest.raises(ConfigError, match="'cache-size' expects"):
        open_wc(opts={"cache-size": "-1"})


def test_defaults_are_a_volatile_unlimited_cache_that_drops_all(blk: BlockBackend) -> None:
    node = wc_of(blk)
    assert (node.wce, node.cache_size, node.policy) == (True, 0, "drop-all")
    assert node.supported_write_flags & ReqFlags.FUA
    assert node.supported_zero_flags & ReqFlags.FUA


# ------------------------------------------------------------------------ the cache itself
def test_a_completed_write_is_visible_at_once_but_not_on_the_media(blk: BlockBackend) -> None:
    blk.pwrite(100, A)
    assert blk.pread(100, 4096) == A
    assert blk.pread(0, 100) == bytes(100)
    assert media(blk) == bytes(3 * 4096)
    c = wc_of(blk).counters()
    assert (c.writes_cached, c.dirty_requests, c.dirty_bytes, c.cached_bytes) == (1, 1, 4096, 4096)


def test_flush_writes_back_in_arrival_order_and_the_media_is_durable(blk: BlockBackend) -> None:
    blk.pwrite(0, A + A)
    blk.pwrite(2048, B)  # overlaps the end of the first write: the newer wins
    want = A[:2048] + B + A[:2048]
    assert blk.pread(0, 8192) == want
    c = wc_of(blk).counters()
    assert (c.dirty_requests, c.dirty_bytes, c.cached_bytes) == (2, 8192, 12288)
    blk.flush()
    assert media(blk, 0, 8192) == want
    c = wc_of(blk).counters()
    assert (c.flushes, c.writebacks, c.dirty_requests, c.dirty_bytes) == (1, 2, 0, 0)
    report = wc_of(blk).power_cut()
    assert (report.kept, report.dropped, report.bytes_lost) == (0, 0, 0)
    assert blk.pread(0, 8192) == want


def test_a_flush_with_nothing_written_does_not_reach_the_cache(blk: BlockBackend) -> None:
    blk.flush()
    assert wc_of(blk).counters().flushes == 0
    blk.pwrite(0, A)
    blk.flush()
    blk.flush()
    assert wc_of(blk).counters().flushes == 1


def test_fua_write_is_durable_at_once_and_supersedes_older_cached_data(
        blk: BlockBackend) -> None:
    node = wc_of(blk)
    blk.pwrite(0, A)
    blk.pwrite(8192, C)
    blk.pwrite(1024, B[:1024], fua=True)
    assert blk.pread(0, 4096) == A[:1024] + B[:1024] + A[:2048]
    assert media(blk) == bytes(1024) + B[:1024] + bytes(2048 + 4096 + 4096)
    c = node.counters()
    assert (c.writes_through, c.writes_cached, c.dirty_bytes) == (1, 2, 3072 + 4096)
    # The older write's overwritten part is gone from the cache: writing the rest back cannot
    # put stale data over the FUA write.
    assert [(r.offset, r.length) for r in node.dirty()] == [(0, 1024), (2048, 2048), (8192, 4096)]
    node.power_cut("keep-all")
    assert media(blk) == A[:1024] + B[:1024] + A[:2048] + bytes(4096) + C


def test_drop_all_after_fua_keeps_only_the_fua_data(blk: BlockBackend) -> None:
    blk.pwrite(0, A)
    blk.pwrite(1024, B[:1024], fua=True)
    wc_of(blk).power_cut("drop-all")
    assert blk.pread(0, 4096) == bytes(1024) + B[:1024] + bytes(2048)


def test_write_zeroes_and_discard_are_cached_like_writes(blk: BlockBackend) -> None:
    blk.pwrite(0, A + B + C)
    blk.flush()
    blk.write_zeroes(0, 4096)
    blk.discard(8192, 4096)
    assert blk.pread(0, 3 * 4096) == bytes(4096) + B + bytes(4096)
    assert media(blk) == A + B + C
    assert wc_of(blk).counters().writes_cached == 3
    wc_of(blk).power_cut()
    assert blk.pread(0, 3 * 4096) == A + B + C
    blk.write_zeroes(0, 4096, ReqFlags.MAY_UNMAP)
    blk.discard(8192, 4096)
    blk.flush()
    assert media(blk) == bytes(4096) + B + bytes(4096)
    wc_of(blk).power_cut()
    assert blk.pread(0, 3 * 4096) == bytes(4096) + B + bytes(4096)


def test_fua_write_zeroes_is_durable_at_once(blk: BlockBackend) -> None:
    blk.pwrite(0, A + B)
    blk.flush()
    blk.pwrite(0, C)
    blk.write_zeroes(2048, 4096, ReqFlags.FUA)
    assert media(blk, 0, 8192) == A[:2048] + bytes(4096) + B[:2048]
    wc_of(blk).power_cut()
    assert blk.pread(0, 8192) == A[:2048] + bytes(4096) + B[:2048]


def test_block_status_reports_the_cached_content() -> None:
    with open_wc(size=SIZE) as b:
        assert not b.block_status(0, 4096).data  # a hole in the media
        b.pwrite(4096, A)
        assert b.block_status(0, SIZE) == BlockStatus(0, 4096, data=False, zero=True,
                                                      allocated=True)
        assert b.block_status(4096, SIZE - 4096) == BlockStatus(4096, 4096, data=True,
                                                                zero=False, allocated=True)
        b.flush()
        b.discard(4096, 2048)
        assert b.block_status(4096, 4096) == BlockStatus(4096, 2048, data=False, zero=True,
                                                         allocated=True)
        b.write_zeroes(6144, 1024)
        st6 = b.block_status(6144, 4096)
        assert (st6.length, st6.zero) == (1024, True)
        assert b.block_status(7168, 1024).data and not b.block_status(7168, 1024).zero


# ------------------------------------------------------------------------ WCE and cache modes
def test_wce_off_is_write_through() -> None:
    with open_wc(wce=False) as b:
        b.pwrite(0, A)
        b.write_zeroes(0, 1024)
        b.discard(8192, 4096)
        assert media(b, 0, 4096) == bytes(1024) + A[:3072]
        c = wc_of(b).counters()
        assert (c.writes_through, c.writes_cached, c.dirty_requests) == (3, 0, 0)
        wc_of(b).power_cut("drop-all")
        assert b.pread(0, 4096) == bytes(1024) + A[:3072]


def test_switching_wce_off_writes_the_cache_back(blk: BlockBackend) -> None:
    node = wc_of(blk)
    blk.pwrite(0, A)
    node.set_wce(False)
    assert not node.wce and media(blk, 0, 4096) == A
    blk.pwrite(4096, B)
    assert media(blk, 4096, 4096) == B
    node.set_wce(True)
    blk.pwrite(8192, C)
    node.power_cut()
    assert blk.pread(0, 3 * 4096) == A + B + bytes(4096)


@pytest.mark.parametrize("cache", ["writethrough", "directsync"])
def test_writethrough_modes_make_every_request_durable(cache: str) -> None:
    with open_wc(cache=cache) as b:
        b.pwrite(0, A + B + C)
        b.write_zeroes(0, 4096)
        b.discard(8192, 4096)  # the backend flushes after a discard in writethrough
        assert media(b) == bytes(4096) + B + bytes(4096)
        c = wc_of(b).counters()
        assert c.dirty_requests == 0 and c.writes_through == 2
        wc_of(b).power_cut()
        assert b.pread(0, 3 * 4096) == bytes(4096) + B + bytes(4096)


@pytest.mark.parametrize("cache", ["writeback", "none"])
def test_writeback_modes_need_a_flush(cache: str) -> None:
    with open_wc(cache=cache) as b:
        b.pwrite(0, A)
        b.pwrite(4096, B, fua=True)
        wc_of(b).power_cut()
        assert b.pread(0, 8192) == bytes(4096) + B
        b.pwrite(0, A)
        b.flush()
        wc_of(b).power_cut()
        assert b.pread(0, 8192) == A + B


def test_unsafe_never_lets_a_flush_or_fua_reach_the_cache() -> None:
    with open_wc(cache="unsafe") as b:
        node = wc_of(b)
        b.pwrite(0, A)
        b.pwrite(4096, B, fua=True)
        b.write_zeroes(8192, 4096, ReqFlags.FUA)
        b.flush()
        c = node.counters()
        assert (c.flushes, c.writes_through, c.writes_cached) == (0, 0, 3)
        assert media(b) == bytes(3 * 4096)
        node.power_cut("drop-all")
        assert b.pread(0, 3 * 4096) == bytes(3 * 4096)


def test_unsafe_with_the_cache_off_is_still_write_through() -> None:
    with open_wc(cache="unsafe", wce=False) as b:
        b.pwrite(0, A)
        wc_of(b).power_cut()
        assert b.pread(0, 4096) == A


def test_cache_size_writes_the_oldest_requests_back() -> None:
    with open_wc(opts={"cache-size": 8192}) as b:
        node = wc_of(b)
        b.pwrite(0, A)
        b.pwrite(4096, B)
        assert node.counters().forced_writebacks == 0
        b.pwrite(8192, C)
        c = node.counters()
        assert (c.forced_writebacks, c.writebacks, c.cached_bytes) == (1, 1, 8192)
        assert media(b) == A + bytes(8192)
        b.pwrite(0, b"x" * 9000)  # larger than the cache: everything older goes, then itself
        assert node.counters().cached_bytes == 0
        assert media(b, 0, 12288) == b"x" * 9000 + C[:12288 - 9000]
        node.power_cut()
        assert b.pread(0, 12288) == b"x" * 9000 + C[:12288 - 9000]


# ------------------------------------------------------------------------ power cuts
def _dirty_pattern(b: BlockBackend) -> tuple[bytes, bytes]:
    """Make ``[0, 16 KiB)`` durable as 0x11, then cache four requests over it; returns the
    durable and the current content."""
    b.pwrite(0, b"\x11" * 16384)
    b.flush()
    b.pwrite(0, b"\x22" * 5000)
    b.pwrite(6000, b"\x33" * 4000)
    b.write_zeroes(9000, 3000)
    b.discard(12288, 4096)
    return b"\x11" * 16384, b.pread(0, 16384)


def test_drop_all_and_keep_all(blk: BlockBackend) -> None:
    durable, current = _dirty_pattern(blk)
    report = wc_of(blk).power_cut("keep-all")
    assert (report.policy, report.kept, report.dropped, report.torn) == ("keep-all", 4, 0, 0)
    assert blk.pread(0, 16384) == current == media(blk, 0, 16384)
    with open_wc() as b:
        durable, current = _dirty_pattern(b)
        report = wc_of(b).power_cut("drop-all")
        assert (report.kept, report.dropped, report.bytes_lost) == (0, 4, 5000 + 4000 + 3000 + 4096)
        assert b.pread(0, 16384) == durable
        assert wc_of(b).counters().power_cuts == 1


def test_random_cuts_are_reproducible_and_tear_only_at_sector_boundaries() -> None:
    outcomes: dict[bytes, int] = {}
    torn_seen = 0
    for seed in range(40):
        contents = []
        for _ in range(2):
            with open_wc() as b:
                durable, current = _dirty_pattern(b)
                report = wc_of(b).power_cut("random", seed=seed)
                after = b.pread(0, 16384)
                contents.append(after)
                model = DiskModel(16384, durable)  # the same requests since the flush
                model.write(0, b"\x22" * 5000)
                model.write(6000, b"\x33" * 4000)
                model.zero(9000, 3000)
                model.discard(12288, 4096)
                assert model.read(0, 16384) == current
                assert model.power_cut_violations(0, after) == []
                torn_seen += report.torn
        assert contents[0] == contents[1], f"seed {seed} is not reproducible"
        outcomes[contents[0]] = seed
        # Sector atomicity: a 512-byte sector of one request is all old or all new.
        got = contents[0]
        for start in range(0, 5000, 512):
            end = min(start + 512, 5000)
            piece = got[start:end]
            assert piece in (b"\x22" * (end - start), b"\x11" * (end - start)), start
    assert torn_seen > 0
    assert len(outcomes) > 10, "random cuts should differ between seeds"


def test_random_cuts_follow_the_node_seed() -> None:
    def run(seed: int) -> list[bytes]:
        out = []
        with open_wc(policy="random", seed=seed) as b:
            for _ in range(3):
                _dirty_pattern(b)
                assert wc_of(b).power_cut().policy == "random"
                out.append(b.pread(0, 16384))
        return out

    assert run(5) == run(5)
    assert any(run(5) != run(s) for s in (6, 7, 8))


def test_torn_pieces_follow_a_larger_request_alignment() -> None:
    for seed in range(30):
        with open_wc(lbs=4096) as b:
            b.pwrite(0, b"\x22" * 16384)
            wc_of(b).power_cut("random", seed=seed)
            got = b.pread(0, 16384)
            for s in range(0, 16384, 4096):
                assert got[s:s + 4096] in (bytes(4096), b"\x22" * 4096)


def test_the_node_keeps_working_after_a_power_cut(blk: BlockBackend) -> None:
    blk.pwrite(0, A)
    wc_of(blk).power_cut()
    blk.pwrite(4096, B)
    assert blk.pread(0, 8192) == bytes(4096) + B
    blk.flush()
    wc_of(blk).power_cut()
    assert blk.pread(0, 8192) == bytes(4096) + B


def test_an_unknown_policy_is_refused(blk: BlockBackend) -> None:
    with pytest.raises(ValueError, match="unknown power-cut policy 'some'"):
        wc_of(blk).power_cut("some")


# ------------------------------------------------------------------------ edges
def test_an_unaligned_discard_piece_behaves_as_on_the_bare_media() -> None:
    with rig.open({"driver": "memory", "size": SIZE, "logical-block-size": 512}) as bare, \
            open_wc(lbs=512) as b:
        b.pwrite(0, A)
        with pytest.raises(OSError) as bare_err:
            bare.discard(100, 1000)
        with pytest.raises(OSError) as wc_err:
            b.discard(100, 1000)
        assert bare_err.value.errno == wc_err.value.errno == errno.EINVAL
        # The cache was written back before the piece went down, so order was kept.
        assert wc_of(b).counters().writebacks == 1 and media(b, 0, 4096) == A
        b.discard(512, 1024)  # aligned: cached
        assert b.pread(0, 4096) == A[:512] + bytes(1024) + A[:2560]
        assert media(b, 0, 4096) == A


def test_close_writes_the_cache_back_without_a_power_cut(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(SIZE))
    spec = {"driver": "writecache", "file": {"driver": "file", "filename": str(image)}}
    with rig.open(spec) as b:
        b.pwrite(0, A)
        assert image.read_bytes()[:4096] == bytes(4096)
    assert image.read_bytes()[:4096] == A


def test_an_o_direct_media_gets_aligned_buffers(tmp_path: Path) -> None:
    from rig.drivers.loop import supports_odirect

    if not supports_odirect(str(tmp_path)):
        pytest.skip(f"{tmp_path} does not support O_DIRECT")
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(SIZE))
    spec = {"driver": "writecache", "file": {"driver": "file", "filename": str(image)}}
    with rig.open(spec, cache="none") as b:
        assert wc_of(b).child.cache_direct
        b.pwrite(100, A)  # read-modify-write above the cache, then a cached aligned write
        b.write_zeroes(8192, 4096)
        b.discard(12288, 4096)
        b.flush()
        wc_of(b).power_cut("random", seed=1)
        b.pwrite(20000, C)
        wc_of(b).power_cut("keep-all")
        assert b.pread(100, 4096) == A and b.pread(20000, 4096) == C
    data = image.read_bytes()
    assert data[100:4196] == A and data[20000:24096] == C


def test_requests_from_the_thread_pool(blk: BlockBackend) -> None:
    writes = [blk.submit(blk.pwrite, i * 512, bytes([i]) * 512) for i in range(64)]
    reads = [blk.submit(blk.pread, 0, 4096) for _ in range(16)]
    for w in writes:
        w.result()
    for r in reads:
        assert len(r.result()) == 4096
    blk.drain()
    want = b"".join(bytes([i]) * 512 for i in range(64))
    assert blk.pread(0, 64 * 512) == want
    blk.flush()
    wc_of(blk).power_cut()
    assert blk.pread(0, 64 * 512) == want


# ------------------------------------------------------------------------ properties
def model_view(op: Op, *, all_durable: bool, flush_durable: bool) -> Op | None:
    """The op the DiskModel must see for what the device does with ``op``.

    ``all_durable``: every request is durable at completion (writethrough/directsync put FUA on
    every write; ``wce`` off writes through). ``flush_durable`` is False under cache=unsafe with
    the cache on: flushes and FUA never reach the cache. None: the model does nothing.
    """
    if isinstance(op, Write | WriteZeroes):
        if all_durable and not op.fua:
            return replace(op, fua=True)
        if not flush_durable and op.fua:
            return replace(op, fua=False)
        return op
    if isinstance(op, Flush) and not flush_durable:
        return None
    return op


def durability(cache: str, wce: bool) -> tuple[bool, bool]:
    """``(all_durable, flush_durable)`` for a cache mode and the node's WCE bit."""
    mode = CACHE_MODES[cache]
    return (not wce or not mode.writeback), (not wce or not mode.no_flush)


class WriteCacheMachine(BlockDeviceMachine):
    """A ``writecache`` over a ``memory`` node against the DiskModel, with power cuts."""

    max_len = 3 * 4096 + 100
    repro_bundles = False  # a repro bundle cannot replay power cuts

    def __init__(self) -> None:
        super().__init__()
        self.node: WriteCacheFilter | None = None
        self.all_durable = False
        self.flush_durable = True
        self.exact_drop_all = True
        self.cuts = 0

    def make_backends(self, data: st.DataObject) -> Sequence[BlockBackend]:
        cache = data.draw(cache_modes(), label="cache")
        lbs = data.draw(st.sampled_from([1, 512, 4096]), label="logical block size")
        wce = data.draw(st.sampled_from([True, True, True, False]), label="wce")
        cache_size = data.draw(st.sampled_from([0, 0, 0, 8192, 32768]), label="cache-size")
        seed = data.draw(st.integers(0, 0xFFFF), label="seed")
        blk = self.open_graph({"driver": "writecache", "wce": wce, "cache-size": cache_size,
                               "policy": "random", "seed": seed,
                               "file": {"driver": "memory", "size": SIZE,
                                        "logical-block-size": lbs}}, cache=cache)
        self.node = wc_of(blk)
        self.all_durable, self.flush_durable = durability(cache, wce)
        # Forced write-backs make more durable than the model says, and a read-modify-write
        # (lbs > 1) makes a FUA write carry its neighbours' current bytes: then drop-all is
        # only checked against what a power cut may leave, not byte for byte.
        self.exact_drop_all = cache_size == 0 and lbs == 1
        return [blk]

    def do(self, op: Op) -> None:
        seen = model_view(op, all_durable=self.all_durable, flush_durable=self.flush_durable)
        if seen is op:
            super().do(op)
            return
        with self.step(op):
            for blk in self.backends:
                apply_to_backend(op, blk)
            if seen is not None:
                apply_to_model(seen, self.model)

    @rule(data=st.data())
    def discard(self, data: st.DataObject) -> None:
        super().discard(data)
        if self.all_durable:  # writethrough flushes after a discard; wce off writes through
            self.model.flush()

    @rule()
    def flush(self) -> None:
        super().flush()
        if self.flush_durable:
            assert self.node is not None
            assert self.node.counters().dirty_requests == 0, "a flush left dirty data"

    @rule(policy=power_cut_policies())
    def power_cut(self, policy: tuple[str, int | None]) -> None:
        keep, seed = policy
        assert self.node is not None
        self._rule_failed = True
        self.node.power_cut(keep, seed=seed)
        observed = self.backends[0].pread(0, self.size)
        violations = self.model.power_cut_violations(0, observed)
        assert not violations, (f"power cut {keep} (seed {seed}): "
                                + "; ".join(str(v) for v in violations))
        if keep == "drop-all" and self.exact_drop_all:
            durable = self.model.durable()
            pos = first_difference(observed, durable)
            assert pos < 0, (f"drop-all left byte {pos} = 0x{observed[pos]:02x}, durable is "
                             f"0x{durable[pos]:02x}")
        if keep == "keep-all":
            assert observed == self.model.read(0, self.size), "keep-all lost a completed write"
        assert self.node.counters().dirty_requests == 0
        self.model.power_cut(observed)
        self.cuts += 1
        self._rule_failed = False


def test_state_machine_power_cuts_leave_only_durable_or_written_values() -> None:
    run_state_machine_as_test(WriteCacheMachine, settings=profiles.selected())


@settings(profiles.selected(), max_examples=60)
@given(cache=st.sampled_from(CACHE_MODE_NAMES), wce=st.booleans(),
       ops=workloads(SIZE, max_len=3 * 4096 + 100, max_ops=40))
def test_drop_all_leaves_exactly_the_durable_content(cache: str, wce: bool,
                                                     ops: list[Op]) -> None:
    all_durable, flush_durable = durability(cache, wce)
    model = DiskModel(SIZE)
    with open_wc(cache=cache, wce=wce) as b:
        for op in ops:
            apply_to_backend(op, b)
            seen = model_view(op, all_durable=all_durable, flush_durable=flush_durable)
            if seen is not None:
                apply_to_model(seen, model)
            if all_durable and isinstance(op, Discard):
                model.flush()
        assert b.pread(0, SIZE) == model.read(0, SIZE)
        wc_of(b).power_cut("drop-all")
        assert b.pread(0, SIZE) == model.durable()


# ------------------------------------------------------------------------ the real flush path
#: FUSE fsyncs the export sees for: write x3, flush | write_zeroes, discard, flush. As
#: docs/foundation.md says: writethrough/directsync put FUA on every write and write-zeroes,
#: emulated on host_device by an fdatasync after each (the explicit flushes then find nothing
#: to do), and the backend flushes after a discard; writeback/none fdatasync at each flush;
#: unsafe never does. The rig does not flush at close (QEMU does).
FSYNCS = {
    "writeback": (1, 2),
    "none": (1, 2),
    "writethrough": (3, 5),
    "directsync": (3, 5),
    "unsafe": (0, 0),
}


@pytest.mark.rig_needs("loop", "fuse")
@pytest.mark.parametrize("cache", CACHE_MODE_NAMES)
def test_host_device_flush_reaches_the_exported_storage_as_fsync(cache: str) -> None:
    from rig.drivers.export import export

    assert set(FSYNCS) == set(CACHE_MODE_NAMES)
    with open_wc(size=4 << 20) as served, export(served) as ex:
        node = wc_of(served)
        ops = ex.operations
        name = os.path.basename(ex.path)
        assert int(Path(f"/sys/block/{name}/queue/discard_max_bytes").read_text()) > 0
        start = ops.fsync_count
        try:
            with rig.open({"driver": "host_device", "filename": ex.path}, cache=cache) as dev:
                assert dev.root.cache_direct == CACHE_MODES[cache].direct
                dev.pwrite(0, A)
                dev.pwrite(4096, B)
                dev.pwrite(8192, C)
                dev.flush()
                first = ops.fsync_count - start
                first_media = media(served)
                dev.write_zeroes(0, 4096)
                dev.discard(8192, 4096)
                dev.flush()
            total = ops.fsync_count - start
            flushes = node.counters().flushes
            final_media = media(served)
        finally:
            # Push out what the loop device's page cache still holds (unsafe) while the export
            # is up, so that nothing is written to it after it is gone.
            fd = os.open(ex.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        assert (first, total) == FSYNCS[cache]
        # Each fsync reached the cache with something to write back (one flush_to_disk each).
        assert flushes == total
        if cache == "unsafe":
            assert first_media == final_media == bytes(3 * 4096)
        else:
            assert first_media == A + B + C
            assert final_media == bytes(4096) + B + bytes(4096)
            node.power_cut("drop-all")
            assert served.pread(0, 3 * 4096) == bytes(4096) + B + bytes(4096)
