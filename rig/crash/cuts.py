"""What the disk holds at a cut: the durable image and the in-flight records, walked from a log.

The model is described in :mod:`rig.crash.states`; this module computes it: the cut points,
what is in flight at each (with the parts no later durable record overwrote), the durable image
(rebuilt by walking the log, one cut at a time), and the pieces a state puts over that image.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from rig.core.units import format_size
from rig.crash.crashstate import BadStateName, CrashState
from rig.crash.logfile import WriteLog
from rig.crash.records import DATA_KINDS, Kind, Record
from rig.errors import ConfigError

#: Sectors are never smaller than this for tearing (the writecache filter's unit).
MIN_SECTOR = 512

Range = tuple[int, int]


def sector_size(log: WriteLog) -> int:
    """The tearing unit of a log's device: ``max(512, logical block size)``."""
    return max(MIN_SECTOR, log.header.logical_block_size)


def sectors(offset: int, length: int, sector: int) -> list[Range]:
    """``[offset, offset+length)`` split at absolute multiples of ``sector``."""
    out: list[Range] = []
    pos, end = offset, offset + length
    while pos < end:
        stop = min(end, (pos // sector + 1) * sector)
        out.append((pos, stop))
        pos = stop
    return out


def sector_count(offset: int, length: int, sector: int) -> int:
    """How many sectors ``[offset, offset+length)`` touches (what ``len(sectors(...))`` is,
    without listing them)."""
    if length <= 0:
        return 0
    return (offset + length - 1) // sector - offset // sector + 1


def sector_at(offset: int, length: int, sector: int, index: int) -> Range:
    """Sector ``index`` of ``[offset, offset+length)``: ``sectors(...)[index]``, computed."""
    first = offset // sector + index
    return max(offset, first * sector), min(offset + length, (first + 1) * sector)


def visible_sectors(offset: int, visible: tuple[Range, ...], sector: int) -> list[Range]:
    """The sector indexes (counted from the sector of ``offset``) that the ``visible`` parts of
    a record touch, as inclusive ``(first, last)`` runs in increasing order."""
    base = offset // sector
    runs: list[Range] = []
    for lo, hi in sorted(visible):
        first, last = lo // sector - base, (hi - 1) // sector - base
        if runs and first <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(runs[-1][1], last))
        else:
            runs.append((first, last))
    return runs


def _subtract(ranges: list[Range], start: int, end: int) -> list[Range]:
    out: list[Range] = []
    for lo, hi in ranges:
        if hi <= start or lo >= end:
            out.append((lo, hi))
            continue
        if lo < start:
            out.append((lo, start))
        if hi > end:
            out.append((end, hi))
    return out


def intersect(ranges: list[Range], start: int, end: int) -> list[Range]:
    return [(max(lo, start), min(hi, end)) for lo, hi in ranges if lo < end and hi > start]


def _content(rec: Record, start: int, end: int) -> bytes:
    if rec.kind is Kind.WRITE:
        return rec.data[start - rec.offset:end - rec.offset]
    return bytes(end - start)


@dataclass(frozen=True)
class Pending:
    """An in-flight record at a cut, and the parts of it no later durable record overwrote."""

    record: Record
    visible: tuple[Range, ...]


@dataclass(frozen=True)
class CutPlan:
    """What is in flight at one cut (the durable image is rebuilt on demand: see
    :class:`Durable`)."""

    cut: int
    pending: tuple[Pending, ...]


class _Walk:
    """Goes through a log keeping the in-flight records (as the disk's cache would: a FUA write
    drops what it overwrites from older in-flight records) and, if ``size`` is given, the
    durable image."""

    def __init__(self, size: int | None, initial: bytes | None = None) -> None:
        if initial is not None and len(initial) != size:
            raise ValueError(f"initial image is {len(initial)} bytes, the log's device {size}")
        self.base: bytearray | None = None
        if size is not None:
            self.base = bytearray(initial) if initial is not None else _zeroes(size)
        self.pending: list[Pending] = []
        self.position = 0

    def _apply(self, rec: Record, ranges: tuple[Range, ...] | list[Range]) -> None:
        if self.base is not None:
            for lo, hi in ranges:
                self.base[lo:hi] = _content(rec, lo, hi)

    def triggers(self, rec: Record) -> bool:
        """Does ``rec`` make something durable (so a crash just before it differs)?"""
        if rec.kind is Kind.FLUSH:
            return any(p.record.seq <= rec.covers for p in self.pending)
        return rec.kind in DATA_KINDS and rec.fua

    def step(self, rec: Record) -> None:
        self.position = rec.seq
        if rec.kind is Kind.FLUSH:
            keep: list[Pending] = []
            for p in self.pending:
                if p.record.seq <= rec.covers:
                    self._apply(p.record, p.visible)
                else:
                    keep.append(p)
            self.pending = keep
        elif rec.kind in DATA_KINDS and rec.length:
            if rec.fua:
                self._apply(rec, [(rec.offset, rec.end)])
                out: list[Pending] = []
                for p in self.pending:
                    left = tuple(_subtract(list(p.visible), rec.offset, rec.end))
                    if left:
                        out.append(Pending(p.record, left))
                self.pending = out
            else:
                self.pending.append(Pending(rec, ((rec.offset, rec.end),)))

    def plan(self, cut: int) -> CutPlan:
        return CutPlan(cut, tuple(self.pending))


def _check_cut(log: WriteLog, cut: int) -> None:
    if not 0 <= cut <= log.last_seq:
        raise BadStateName(f"cut {cut} is outside the log (records 1..{log.last_seq})")


def cut_plans(log: WriteLog, *, upto: int | None = None) -> Iterator[CutPlan]:
    """The plan of every cut point of ``log`` (records ``1..upto``), in log order."""
    records = log.records if upto is None else log.upto(upto)
    walk = _Walk(None)
    changed = True
    for rec in records:
        triggers = walk.triggers(rec)
        if changed and triggers:
            yield walk.plan(rec.seq - 1)
            changed = False
        walk.step(rec)
        if triggers or (rec.kind in DATA_KINDS and rec.length):
            changed = True
    if changed:
        yield walk.plan(records[-1].seq if records else 0)


def plan_at(log: WriteLog, cut: int) -> CutPlan:
    """The plan of a crash right after record ``cut`` (any record, not only cut points)."""
    _check_cut(log, cut)
    walk = _Walk(None)
    for rec in log.upto(cut):
        walk.step(rec)
    return walk.plan(cut)


def ram() -> int:
    """This machine's RAM in bytes (0 when unknown): the most one device image may take."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


class ImageTooLarge(ConfigError):
    """The log's device is larger than one image the machine can hold in memory."""


def _zeroes(size: int) -> bytearray:
    """A zeroed device image, or :class:`ImageTooLarge` naming the size and the limit."""
    limit = ram()
    if limit and size > limit:
        raise ImageTooLarge(_too_large(size, f"this machine's RAM ({format_size(limit)})"))
    try:
        return bytearray(size)
    except (MemoryError, OverflowError):
        raise ImageTooLarge(_too_large(size, "what the allocator gives")) from None


def _too_large(size: int, limit: str) -> str:
    return (f"the log's device is {format_size(size)} ({size} bytes), more than {limit}: a "
            "crash state's image is built in memory, so listing the states works but "
            "materializing or checking one needs a smaller device")


class Durable:
    """The durable image at any cut, built by walking the log; asking for cuts in increasing
    order walks it once (one image in memory). The image is allocated on the first
    :meth:`at`, so listing states never needs it; a device larger than the machine's RAM is an
    :class:`ImageTooLarge` there."""

    def __init__(self, log: WriteLog, initial: bytes | None = None) -> None:
        self.log = log
        self.initial = initial
        if initial is not None and len(initial) != log.header.device_size:
            raise ValueError(f"initial image is {len(initial)} bytes, the log's device "
                             f"{log.header.device_size}")
        self._walk: _Walk | None = None

    def at(self, cut: int) -> bytearray:
        """The durable image after record ``cut`` (do not modify it)."""
        _check_cut(self.log, cut)
        if self._walk is None or cut < self._walk.position:
            self._walk = None  # the old image goes before the new one is made
            self._walk = _Walk(self.log.header.device_size, self.initial)
        for rec in self.log.records[self._walk.position:cut]:
            self._walk.step(rec)
        assert self._walk.base is not None
        return self._walk.base


def check_state(plan: CutPlan, state: CrashState, sector: int) -> None:
    """A :class:`BadStateName` unless ``state`` is one the enumeration of ``plan``'s cut could
    list: its records in flight there, its torn sector indexes sectors of the record that still
    show, and a torn record not keeping all of them (that is ``keep``)."""
    if state.cut != plan.cut:
        raise BadStateName(f"state {state} is not of cut {plan.cut}")
    flying = {p.record.seq: p for p in plan.pending}
    missing = sorted({*state.keep, *(seq for seq, _ in state.torn)} - set(flying))
    if missing:
        raise BadStateName(f"state {state}: records {missing} are not in flight at cut "
                           f"{plan.cut}")
    for seq, idx in state.torn:
        p = flying[seq]
        rec = p.record
        n = sector_count(rec.offset, rec.length, sector)
        if not idx or max(idx) >= n:
            raise BadStateName(f"state {state}: record {seq} has sectors 0..{n - 1}")
        runs = visible_sectors(rec.offset, p.visible, sector)
        for i in idx:
            if not any(lo <= i <= hi for lo, hi in runs):
                shown = ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in runs)
                raise BadStateName(f"state {state}: sector {i} of record {seq} was overwritten "
                                   f"by a later durable write (in flight: {shown})")
        if len(set(idx)) == sum(hi - lo + 1 for lo, hi in runs):
            raise BadStateName(f"state {state}: torn record {seq} keeps every sector still in "
                               f"flight: name it 'keep {seq}'")


def pieces(plan: CutPlan, state: CrashState, sector: int) -> list[tuple[int, bytes]]:
    """What ``state`` puts over the durable image of its cut: ``(offset, data)`` in log order.
    A state no enumeration lists is a :class:`BadStateName` (see :func:`check_state`)."""
    check_state(plan, state, sector)
    chosen: dict[int, tuple[int, ...] | None] = {seq: None for seq in state.keep}
    chosen.update(dict(state.torn))
    out: list[tuple[int, bytes]] = []
    for p in plan.pending:
        rec = p.record
        if rec.seq not in chosen:
            continue
        idx = chosen[rec.seq]
        ranges = list(p.visible)
        if idx is not None:
            ranges = [r for i in idx
                      for r in intersect(ranges, *sector_at(rec.offset, rec.length, sector, i))]
        out.extend((lo, _content(rec, lo, hi)) for lo, hi in ranges)
    return out


def image(plan: CutPlan, state: CrashState, sector: int, base: bytes | bytearray) -> bytes:
    """The device content of ``state`` (whose cut is the plan's) over the durable ``base``."""
    out = bytearray(base)
    for offset, data in pieces(plan, state, sector):
        out[offset:offset + len(data)] = data
    return bytes(out)
