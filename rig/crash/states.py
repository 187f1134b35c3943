"""The crash states a disk with a volatile write cache may leave, and their enumeration.

The model (docs/crash.md has the argument):

* a record is **durable** at a cut (the device completed records ``1..cut``, then lost power) if
  it is a FUA write or write-zeroes, or a flush record at or before the cut covers it;
* the other data records up to the cut are **in flight**: each may have reached the media whole,
  not at all, or (``torn=True``) in some of its sectors (``max(512, logical block size)`` bytes,
  at absolute sector boundaries);
* the device then holds the initial image with the durable records and the chosen in-flight
  pieces applied **in log order**: a later write to a sector wins over an earlier one that also
  persisted, and an in-flight write never lands over a later durable one. A discard reads as
  zeroes, as :class:`~rig.testing.model.DiskModel` says.

Every state is one ``DiskModel.possible_after_power_cut`` allows (the model allows more: bytes
torn anywhere, older data over newer). States are taken at *cut points*: before each FUA record
and each flush that makes something durable, and at the end; a crash anywhere else leaves a
state that the next cut point also has (an in-flight write may be left out).

A :class:`CrashState` names a state by its cut, the in-flight records kept whole and the torn ones
with their kept sector indexes (counted from the record's first sector), so it can be printed,
parsed back and materialized again from the same log.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from rig.crash.crashstate import CrashState
from rig.crash.cuts import (
    CutPlan,
    Durable,
    cut_plans,
    image,
    pieces,
    plan_at,
    sector_size,
    visible_sectors,
)
from rig.crash.logfile import WriteLog
from rig.errors import ConfigError

__all__ = ["CrashState", "CrashStates", "Unit"]

#: The most in-flight sectors one cut may have in a torn enumeration (64 MiB in flight in
#: 512-byte sectors); past it, listing them would take minutes and memory to no use.
MAX_UNITS = 1 << 17


class TooManyUnits(ConfigError):
    """A cut has more torn units in flight than an enumeration takes."""


#: One in-flight unit of a cut, as :meth:`CrashStates.units` lists them: ``(seq, index)``, the
#: record's sequence number and the sector index in it (``-1``: the whole record).
Unit = tuple[int, int]


@dataclass(frozen=True)
class _Unit:
    seq: int
    index: int  # sector index in the record; -1: the whole record


def _units(plan: CutPlan, torn: bool, sector: int) -> list[_Unit]:
    if not torn:
        return [_Unit(p.record.seq, -1) for p in plan.pending]
    runs = [(p.record.seq, visible_sectors(p.record.offset, p.visible, sector))
            for p in plan.pending]
    total = sum(hi - lo + 1 for _, rs in runs for lo, hi in rs)
    if total > MAX_UNITS:
        raise TooManyUnits(f"cut {plan.cut}: {total} sectors in flight, more than the "
                           f"{MAX_UNITS} a torn enumeration takes (list the states without "
                           "torn sectors)")
    return [_Unit(seq, i) for seq, rs in runs for lo, hi in rs for i in range(lo, hi + 1)]


def _state(cut: int, units: list[_Unit], mask: int) -> CrashState:
    per_record: dict[int, list[int]] = {}
    chosen: dict[int, list[int]] = {}
    for bit, u in enumerate(units):
        per_record.setdefault(u.seq, []).append(u.index)
        if mask >> bit & 1:
            chosen.setdefault(u.seq, []).append(u.index)
    keep = tuple(seq for seq, idx in chosen.items() if len(idx) == len(per_record[seq]))
    torn = tuple((seq, tuple(idx)) for seq, idx in chosen.items()
                 if len(idx) != len(per_record[seq]))
    return CrashState(cut, keep, torn)


class CrashStates:
    """The crash states of a log: every cut point, every subset of what is in flight there.

    A cut with at most ``max_exhaustive`` units in flight (records, or their sectors when
    ``torn``) gives all ``2**units`` states, in mask order (nothing kept first, everything kept
    last). A larger one gives ``samples`` states drawn from ``random.Random`` seeded by ``seed``
    and the cut (the two extremes first; each record dropped, kept or torn sector by sector),
    so the same arguments always give the same states.
    """

    def __init__(self, log: WriteLog, *, torn: bool = False, max_exhaustive: int = 12,
                 samples: int = 256, seed: int = 0, upto: int | None = None,
                 initial: bytes | None = None) -> None:
        if samples < 2 or max_exhaustive < 0:
            raise ValueError(f"need samples >= 2 and max_exhaustive >= 0: {samples}, "
                             f"{max_exhaustive}")
        self.log = log
        self.torn = torn
        self.max_exhaustive = max_exhaustive
        self.samples = samples
        self.seed = seed
        self.sector = sector_size(log)
        self.plans = list(cut_plans(log, upto=upto))
        self.durable = Durable(log, initial)
        self._by_cut = {p.cut: p for p in self.plans}
        self._units = [_units(p, torn, self.sector) for p in self.plans]
        self._units_at = {p.cut: u for p, u in zip(self.plans, self._units, strict=True)}

    def cuts(self) -> list[int]:
        return [p.cut for p in self.plans]

    def exhaustive(self) -> bool:
        """True when no cut was sampled."""
        return all(len(u) <= self.max_exhaustive for u in self._units)

    def count(self) -> int:
        """How many states iterating gives (``2**units`` per cut, or ``samples``)."""
        return sum(1 << len(u) if len(u) <= self.max_exhaustive else min(self.samples,
                                                                          1 << len(u))
                   for u in self._units)

    def __iter__(self) -> Iterator[CrashState]:
        for plan, units in zip(self.plans, self._units, strict=True):
            for mask in self._masks(plan.cut, units):
                yield _state(plan.cut, units, mask)

    def _masks(self, cut: int, units: list[_Unit]) -> Iterator[int]:
        n = len(units)
        if n <= self.max_exhaustive:
            yield from range(1 << n)
            return
        full = (1 << n) - 1
        rng = random.Random(self.seed * 1_000_003 + cut)
        seen = {0, full}
        yield 0
        yield full
        want = min(self.samples, 1 << n)
        groups: dict[int, list[int]] = {}
        for bit, u in enumerate(units):
            groups.setdefault(u.seq, []).append(bit)
        while len(seen) < want:
            mask = 0
            for bits in groups.values():
                choice = rng.randrange(3) if len(bits) > 1 else rng.randrange(2)
                for bit in bits:
                    if choice == 1 or (choice == 2 and rng.random() < 0.5):
                        mask |= 1 << bit
            if mask not in seen:
                seen.add(mask)
                yield mask

    def _cut_units(self, cut: int) -> list[_Unit]:
        units = self._units_at.get(cut)
        if units is None:  # not a cut point: computed once
            units = self._units_at[cut] = _units(self.plan(cut), self.torn, self.sector)
        return units

    def units(self, cut: int) -> list[Unit]:
        """The in-flight units of ``cut`` in log order: ``(seq, -1)`` for a whole record, or
        with ``torn`` ``(seq, i)`` for each of its sectors that still shows."""
        return [(u.seq, u.index) for u in self._cut_units(cut)]

    def dropped(self, state: CrashState) -> list[Unit]:
        """The units of ``state.cut`` that ``state`` does not keep, in log order (a torn sector
        index that is no unit, one a later FUA write covered, changes nothing and is ignored)."""
        units = self._cut_units(state.cut)
        flying = {u.seq for u in units}
        kept: dict[int, frozenset[int] | None] = {seq: None for seq in state.keep}
        for seq, idx in state.torn:
            if not self.torn:
                raise ValueError(f"state {state} tears record {seq}, but these states are "
                                 "not torn (use CrashStates(..., torn=True))")
            kept[seq] = frozenset(idx)
        missing = sorted(set(kept) - flying)
        if missing:
            raise ValueError(f"state {state}: records {missing} are not in flight at cut "
                             f"{state.cut}")
        out: list[Unit] = []
        for u in units:
            if u.seq in kept:
                sectors_kept = kept[u.seq]
                if sectors_kept is None or u.index in sectors_kept:
                    continue
            out.append((u.seq, u.index))
        return out

    def with_dropped(self, cut: int, dropped: Iterable[Unit]) -> CrashState:
        """The state of ``cut`` that keeps every in-flight unit but ``dropped`` (the inverse of
        :meth:`dropped`: ``with_dropped(s.cut, dropped(s))`` is ``s`` for every state listed
        here, and the same image for any other)."""
        units = self._cut_units(cut)
        bits = {(u.seq, u.index): bit for bit, u in enumerate(units)}
        mask = (1 << len(units)) - 1
        for unit in dropped:
            bit = bits.get(unit)
            if bit is None:
                raise ValueError(f"{unit} is not an in-flight unit of cut {cut}")
            mask &= ~(1 << bit)
        return _state(cut, units, mask)

    def plan(self, cut: int) -> CutPlan:
        """The plan of ``cut`` (a cut point, or any other record number)."""
        plan = self._by_cut.get(cut)
        return plan if plan is not None else plan_at(self.log, cut)

    def pieces(self, state: CrashState) -> list[tuple[int, bytes]]:
        """What ``state`` writes over :meth:`durable_image` of its cut (a copy-on-write overlay
        of that image needs only these)."""
        return pieces(self.plan(state.cut), state, self.sector)

    def durable_image(self, cut: int) -> bytes:
        """The durable content at ``cut``: what the state that keeps nothing holds."""
        return bytes(self.durable.at(cut))

    def image(self, state: CrashState) -> bytes:
        """The device content ``state`` stands for (fastest when asked for in cut order)."""
        return image(self.plan(state.cut), state, self.sector, self.durable.at(state.cut))
