"""A byte-range index: which of thousands of ``[start, end)`` ranges overlap a request.

Ranges are kept in *bands* by length class (the bit length of ``end - start``); in each band,
three parallel lists sorted by start. A range of length at most ``maxlen`` that overlaps
``[lo, hi)`` starts in ``(lo - maxlen, hi)``, so a query is two ``bisect`` calls per band (C
speed) plus a check of the few candidates in between: O(bands * log n + candidates), with at most
64 bands and usually one or two. Memory is O(n) whatever the overlap, unlike a table of
elementary segments. Insert and remove are ``list.insert``/``del`` (memmove), fine for live
edits of a few rules among thousands.

Not thread-safe on its own: the engine holds its lock around every call.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class _Band(Generic[T]):
    __slots__ = ("ends", "items", "maxlen", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.items: list[T] = []
        self.maxlen = 0


class RangeIndex(Generic[T]):
    """Items keyed by a non-empty byte range ``[start, end)``."""

    def __init__(self) -> None:
        self._bands: dict[int, _Band[T]] = {}
        self._band_list: list[_Band[T]] = []
        self.count = 0
        """How many ranges are stored (an attribute: ``len()`` would be a Python call)."""

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[int, int, T]]:
        for band in self._band_list:
            yield from zip(band.starts, band.ends, band.items, strict=True)

    def add(self, start: int, end: int, item: T) -> None:
        if not 0 <= start < end:
            raise ValueError(f"empty or negative range [{start}, {end})")
        key = (end - start).bit_length()
        band = self._bands.get(key)
        if band is None:
            band = self._bands[key] = _Band()
            self._band_list.append(band)
        pos = bisect_right(band.starts, start)
        band.starts.insert(pos, start)
        band.ends.insert(pos, end)
        band.items.insert(pos, item)
        band.maxlen = max(band.maxlen, end - start)
        self.count += 1

    def remove(self, start: int, end: int, item: T) -> bool:
        """Remove ``item`` (compared by identity) stored under ``[start, end)``."""
        band = self._bands.get((end - start).bit_length())
        if band is None:
            return False
        pos = bisect_left(band.starts, start)
        while pos < len(band.starts) and band.starts[pos] == start:
            if band.items[pos] is item and band.ends[pos] == end:
                del band.starts[pos], band.ends[pos], band.items[pos]
                self.count -= 1
                if not band.items:
                    del self._bands[(end - start).bit_length()]
                    self._band_list.remove(band)
                return True
            pos += 1
        return False

    def overlapping(self, lo: int, hi: int) -> Sequence[T]:
        """Items whose range overlaps ``[lo, hi)`` (none for an empty query), in no set order.

        Hot path: the usual answer, none, is the empty tuple (nothing allocated)."""
        out: list[T] | None = None
        if hi > lo:
            for band in self._band_list:
                starts = band.starts
                i = bisect_right(starts, lo - band.maxlen)
                j = bisect_left(starts, hi, i)
                while i < j:
                    if band.ends[i] > lo:
                        if out is None:
                            out = []
                        out.append(band.items[i])
                    i += 1
        return () if out is None else out


class Coverage:
    """The union of many ``[start, end)`` ranges as sorted disjoint intervals: whether a request
    touches any of them is one ``bisect`` (C speed) and one comparison, whatever the count.

    The faults filter keeps one per op, made from every rule's span, to skip the rule engine
    (its lock, its index, its trigger checks) for a request that no rule's range can reach."""

    __slots__ = ("ends", "starts")

    def __init__(self, spans: Iterator[tuple[int, int]] | Sequence[tuple[int, int]]) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        for start, end in sorted(s for s in spans if s[1] > s[0]):
            if self.ends and start <= self.ends[-1]:
                if end > self.ends[-1]:
                    self.ends[-1] = end
            else:
                self.starts.append(start)
                self.ends.append(end)

    def touches(self, lo: int, hi: int) -> bool:
        """True if ``[lo, hi)`` overlaps any range (never for an empty request)."""
        i = bisect_left(self.starts, hi) - 1
        return hi > lo and i >= 0 and self.ends[i] > lo
