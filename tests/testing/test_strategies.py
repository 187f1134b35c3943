"""The strategies stay in bounds and reach the edge cases they promise."""

from __future__ import annotations

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import rig
from rig.core.cache import CACHE_MODES
from rig.testing.ops import Discard, Flush, Op, Write, WriteZeroes, pattern
from rig.testing.strategies import cache_modes, extents, io_ops, throttle_limits


@given(st.data(), st.integers(1, 1 << 20), st.sampled_from([1, 512, 4096]))
def test_extents_stay_inside_the_device(data: st.DataObject, size: int, align: int) -> None:
    offset, length = data.draw(extents(size, align, max_len=65536))
    assert offset >= 0
    assert 1 <= length <= 65536
    assert offset + length <= size


@given(st.data(), st.integers(4096, 1 << 20))
def test_aligned_only_extents_are_aligned(data: st.DataObject, size: int) -> None:
    offset, length = data.draw(extents(size, 4096, unaligned=False))
    assert offset % 4096 == 0
    assert length % 4096 == 0
    assert length > 0 and offset + length <= size


def test_extents_reach_both_sides_of_a_block_boundary() -> None:
    strategy = extents(1 << 20, 4096, max_len=16384)
    set_ = settings(database=None, max_examples=2000)
    head, length = find(strategy, lambda e: e[0] % 4096 == 4095 and e[1] >= 2, settings=set_)
    assert head % 4096 == 4095 and length >= 2  # the last byte of one block and the next
    offset, length = find(strategy, lambda e: (e[0] + e[1]) % 4096 == 1 and e[0] % 4096 == 0,
                          settings=set_)
    assert (offset + length) % 4096 == 1


@pytest.mark.parametrize(("args", "kwargs"), [
    ((100, 3), {}), ((100, 1), {"max_len": 0}), ((10, 4096), {"unaligned": False}),
])
def test_impossible_extents_are_invalid_arguments(args: tuple[int, int],
                                                  kwargs: dict[str, int]) -> None:
    with pytest.raises(InvalidArgument):
        extents(*args, **kwargs).example()  # type: ignore[arg-type]


@given(io_ops(65536, align=512, max_len=8192))
def test_io_ops_fit_and_discards_are_aligned(op: Op) -> None:
    if isinstance(op, Flush):
        return
    assert op.offset + op.length <= 65536
    if isinstance(op, Discard):
        assert op.offset % 512 == 0 and op.length % 512 == 0
    if isinstance(op, Write):
        assert len(op.data) == op.length


def test_io_ops_cover_every_kind_and_flag() -> None:
    strategy = io_ops(65536, 512)
    set_ = settings(database=None, max_examples=2000)
    find(strategy, lambda op: isinstance(op, Write) and op.fua, settings=set_)
    find(strategy, lambda op: isinstance(op, WriteZeroes) and op.may_unmap, settings=set_)
    find(strategy, lambda op: isinstance(op, Discard), settings=set_)
    find(strategy, lambda op: isinstance(op, Flush), settings=set_)


def test_pattern_detects_shifts() -> None:
    data = pattern(0x0305, 1024)
    assert data[:3] == bytes([5, 8, 11])
    assert len(set(data[:256])) == 256
    assert all(data[i] != data[i + 1] for i in range(1023))


@given(cache_modes(direct=False))
def test_cache_modes_filter_on_o_direct(mode: str) -> None:
    assert not CACHE_MODES[mode].direct


@given(limits=throttle_limits())
@settings(max_examples=200, deadline=None)
def test_throttle_limits_are_valid_and_open_a_throttle_node(limits: dict[str, int]) -> None:
    from rig.throttle.limits import ThrottleLimits

    assert ThrottleLimits.from_mapping(limits).to_mapping() == limits
    spec = {"driver": "throttle", "file": {"driver": "memory", "size": 65536},
            **{f"throttling.{k}": v for k, v in limits.items()}}
    if not limits:  # no limits and no group: QEMU's throttle driver refuses the node too
        with pytest.raises(rig.ConfigError, match="Please specify a throttle group"):
            rig.open(spec)
        return
    with rig.open(spec) as blk:
        assert blk.getlength() == 65536
