"""The faults filter's pre-check (issue 20): a request no rule's span touches skips the engine,
and every rule change (add, remove, disable, enable, an unranged rule, a gone device) is seen at
the next request."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rig
from rig.core.backend import BlockBackend
from rig.faults import Error, Gone, Rule
from rig.faults.engine import FaultEngine
from rig.faults.index import Coverage
from rig.filters.faults import FaultsFilter, find_faults

SIZE = 1 << 20
coords = st.one_of(st.integers(0, 40), st.integers(0, 1 << 16))
spans = st.tuples(coords, st.integers(0, 5000)).map(lambda t: (t[0], t[0] + t[1]))


@given(ranges=st.lists(spans, max_size=50), asked=st.lists(spans, min_size=1, max_size=20))
def test_coverage_matches_brute_force(ranges: list[tuple[int, int]],
                                      asked: list[tuple[int, int]]) -> None:
    cover = Coverage(ranges)
    assert all(a < b for a, b in zip(cover.ends, cover.starts[1:], strict=False))  # disjoint
    for lo, hi in asked:
        want = hi > lo and any(s < hi and e > lo and e > s for s, e in ranges)
        assert cover.touches(lo, hi) is want, (lo, hi)


def graph() -> tuple[BlockBackend, FaultsFilter, list[int]]:
    """A faults filter over RAM whose engine records the offset of every request it is asked."""
    blk = rig.open({"driver": "faults", "file": {"driver": "memory", "size": SIZE}})
    f = find_faults(blk.root)
    engine = f.source
    assert isinstance(engine, FaultEngine)
    asked: list[int] = []
    decide = engine.decide

    def counting(seq: int, op: str, offset: int, length: int):  # type: ignore[no-untyped-def]
        asked.append(offset)
        return decide(seq, op, offset, length)

    engine.decide = counting  # type: ignore[method-assign]
    return blk, f, asked


def fails(blk: BlockBackend, offset: int, write: bool = False) -> int:
    try:
        if write:
            blk.pwrite(offset, b"x" * 4096)
        else:
            blk.pread(offset, 4096)
    except OSError as e:
        return e.errno or -1
    return 0


def test_requests_outside_every_span_skip_the_engine_and_rule_changes_are_seen() -> None:
    blk, f, asked = graph()
    with blk:
        for i in range(100):  # 4 KiB rules every 8 KiB in the first 800 KiB, never firing
            f.add_rule(Rule(Error("EIO"), name=f"r{i}", op=["read", "write"],
                            start=i * 8192, end=i * 8192 + 4096, nth=1_000_000))
        assert fails(blk, 900 * 1024) == 0 and fails(blk, 900 * 1024, write=True) == 0
        assert asked == []  # beyond every span: the engine was not asked
        assert fails(blk, 8192) == 0 and asked == [8192]  # a span: asked, did not fire
        f.add_rule(Rule(Error("ENOSPC"), name="late", op="read", start=900 * 1024,
                        end=904 * 1024))
        assert fails(blk, 900 * 1024) == errno.ENOSPC  # the new span is covered at once
        f.disable("late")
        assert fails(blk, 900 * 1024) == 0
        f.enable("late")
        assert fails(blk, 900 * 1024) == errno.ENOSPC
        f.remove_rule("late")
        assert fails(blk, 900 * 1024) == 0
        f.add_rule(Rule(Error("EIO"), name="any", op="write", nth=1))  # unranged: every write
        assert fails(blk, 1000 * 1024, write=True) == errno.EIO
        assert fails(blk, 1000 * 1024) == 0  # reads still skip
        f.remove_rule("any")
        f.add_rule(Rule(Gone(), name="gone", op="read", start=0, end=4096))
        assert fails(blk, 0) == errno.ENODEV
        assert fails(blk, 900 * 1024) == errno.ENODEV  # gone: every request, any range
        f.revive()
        f.remove_rule("gone")
        assert fails(blk, 900 * 1024) == 0


@pytest.mark.parametrize("write", [False, True])
def test_request_numbers_and_hits_are_as_without_the_pre_check(write: bool) -> None:
    blk, f, asked = graph()
    with blk:
        op = "write" if write else "read"
        f.add_rule(Rule(Error("EIO"), name="third", op=op, start=0, end=4096, nth=3))
        results = [fails(blk, off, write) for off in (8192, 0, 8192, 0, 0, 0)]
        assert results == [0, 0, 0, 0, errno.EIO, 0]  # the third request on its span
        assert f.seq == 6 and f.counters() == {"third": 1}
        assert asked == [0, 0, 0, 0]


def test_rules_for_another_state_are_not_asked_until_the_state_comes() -> None:
    blk, f, asked = graph()
    with blk:
        f.add_rule(Rule(Error("EIO"), name="later", op="read", start=0, end=4096, state=2))
        f.add_rule(Rule(Error("EIO"), name="flip", op="write", start=8192, end=12288,
                        new_state=2, once=True))
        assert fails(blk, 0) == 0 and asked == []  # state 1: the rule cannot fire
        assert fails(blk, 8192, write=True) == errno.EIO  # fires and sets state 2
        assert fails(blk, 0) == errno.EIO and asked == [8192, 0]
        f.state = 1
        assert fails(blk, 0) == 0 and asked == [8192, 0]  # the coverage of state 1, kept
        f.state = 2
        assert fails(blk, 0) == errno.EIO
        assert f.engine.hits()["later"] == 2
