"""The byte-range index against brute force, under generated adds, removes and queries."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rig.faults.index import RangeIndex

SPAN = 1 << 16

# Small coordinates mixed with large ones, so ranges often touch queries end to start.
coords = st.one_of(st.integers(0, 40), st.integers(0, SPAN))
ranges = st.tuples(coords, st.one_of(st.integers(1, 20), st.integers(1, SPAN))).map(
    lambda t: (t[0], t[0] + t[1]))
queries = st.tuples(coords, st.one_of(st.integers(0, 20), st.integers(0, SPAN))).map(
    lambda t: (t[0], t[0] + t[1]))


class Item:
    """Compared by identity, as the engine's records are."""

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end


@given(added=st.lists(ranges, max_size=60), removed=st.lists(st.integers(0, 59), max_size=30),
       asked=st.lists(queries, min_size=1, max_size=20))
def test_overlapping_matches_brute_force(added: list[tuple[int, int]], removed: list[int],
                                         asked: list[tuple[int, int]]) -> None:
    index: RangeIndex[Item] = RangeIndex()
    live: list[Item] = []
    for start, end in added:
        item = Item(start, end)
        index.add(start, end, item)
        live.append(item)
    for i in removed:
        if i < len(live):
            item = live.pop(i)
            assert index.remove(item.start, item.end, item)
            assert not index.remove(item.start, item.end, item)  # gone for good
    assert len(index) == len(live)
    for lo, hi in asked:
        got = {id(x) for x in index.overlapping(lo, hi)}
        want = {id(x) for x in live if x.start < hi and x.end > lo and hi > lo}
        assert got == want, (lo, hi)


def test_touching_is_not_overlapping() -> None:
    index: RangeIndex[str] = RangeIndex()
    index.add(100, 200, "r")
    assert list(index.overlapping(0, 100)) == []
    assert list(index.overlapping(200, 300)) == []
    assert list(index.overlapping(99, 101)) == ["r"]
    assert list(index.overlapping(199, 200)) == ["r"]
    assert list(index.overlapping(150, 150)) == []
    index.add(150, 214, "shorter")  # same length band: found by the window, then checked
    index.add(100, 227, "longer")
    assert sorted(index.overlapping(214, 300)) == ["longer"]


def test_identical_ranges_are_removed_one_by_one() -> None:
    index: RangeIndex[Item] = RangeIndex()
    a, b = Item(0, 10), Item(0, 10)
    index.add(0, 10, a)
    index.add(0, 10, b)
    assert index.remove(0, 10, b)
    assert list(index.overlapping(5, 6)) == [a]


def test_empty_ranges_are_refused() -> None:
    with pytest.raises(ValueError):
        RangeIndex[int]().add(5, 5, 1)


def test_ten_thousand_ranges_answer_in_microseconds() -> None:
    """The point of the index: a lookup among 10,000 ranges costs a few bisects, not a scan."""
    index: RangeIndex[int] = RangeIndex()
    for i in range(10_000):
        index.add(i * 100_000, i * 100_000 + 4096, i)
    index.add(0, 1 << 40, -1)  # one huge range in its own band
    rng = random.Random(0)
    qs = [rng.randrange(1 << 30) for _ in range(20_000)]
    t0 = time.perf_counter()
    for q in qs:
        index.overlapping(q, q + 65536)
    per_query = (time.perf_counter() - t0) / len(qs)
    assert per_query < 20e-6, f"{per_query * 1e6:.1f} us per lookup"  # a linear scan: ~300 us
