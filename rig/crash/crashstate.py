"""The name of one crash state: ``cut 9 keep 3,5 torn 7[0-2,5]`` (see :mod:`rig.crash.states`).

A name is read back exactly as ``str()`` writes it: record numbers increasing, no record twice,
sector ranges ``lo-hi`` with ``lo < hi`` and as long as they go (``0-2``, not ``0,1,2``).
Anything else (``4[7-3]``, ``keep 5,5``, a record both kept and torn, a leading zero, a
5,000-digit number, Unicode digits) is a :class:`BadStateName`, never a state that names
nothing ``rig crash states`` lists. Whether the records are in flight at the cut is
the log's business (:func:`rig.crash.cuts.check_state`).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from rig.core import values
from rig.errors import ConfigError

#: The longest name accepted (a sampled cut with thousands of records in flight still fits).
MAX_NAME = 1 << 20
#: The most sector indexes one name may list (a torn record of 512 MiB in 512-byte sectors).
MAX_INDEXES = 1 << 20

_NAME = re.compile(r"\s*cut ([0-9]+)(?: keep ([0-9]+(?:,[0-9]+)*))?"
                   r"(?: torn ([0-9]+\[[0-9,\-]*\](?:,[0-9]+\[[0-9,\-]*\])*))?\s*", re.ASCII)
_TORN = re.compile(r"([0-9]+)\[([0-9,\-]*)\]", re.ASCII)
_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?", re.ASCII)
_EXAMPLE = "e.g. 'cut 9 keep 3,5 torn 7[0-2]'"


class BadStateName(ConfigError):
    """A crash state's name that does not parse, or names no state of the log."""


@dataclass(frozen=True, order=True)
class CrashState:
    """One crash state: ``cut`` plus the in-flight records that persisted (whole or torn)."""

    cut: int
    keep: tuple[int, ...] = ()
    torn: tuple[tuple[int, tuple[int, ...]], ...] = ()

    def __str__(self) -> str:
        out = f"cut {self.cut}"
        if self.keep:
            out += " keep " + ",".join(map(str, self.keep))
        if self.torn:
            out += " torn " + ",".join(f"{seq}[{_ranges_text(idx)}]" for seq, idx in self.torn)
        return out

    @classmethod
    def parse(cls, text: str) -> CrashState:
        """The inverse of ``str()``: ``cut 9 keep 3,5 torn 7[0-2,5]``. A :class:`BadStateName`
        (a ConfigError, so also a ValueError) for anything ``str()`` would not write."""
        if len(text) > MAX_NAME:
            raise BadStateName(f"a crash state name of {len(text)} characters is too long "
                               f"(at most {MAX_NAME})")
        m = _NAME.fullmatch(text)
        if m is None:
            raise BadStateName(f"not a crash state: {shown_name(text)} ({_EXAMPLE})")
        cut = _number("cut", m.group(1))
        keep = tuple(_number("keep", x) for x in m.group(2).split(",")) if m.group(2) else ()
        _increasing("keep", keep)
        torn: list[tuple[int, tuple[int, ...]]] = []
        budget = MAX_INDEXES
        for seq_text, idx_text in _TORN.findall(m.group(3) or ""):
            seq = _number("torn", seq_text)
            idx = _parse_ranges(seq, idx_text, budget)
            budget -= len(idx)
            torn.append((seq, idx))
        _increasing("torn", tuple(seq for seq, _ in torn))
        both = sorted(set(keep) & {seq for seq, _ in torn})
        if both:
            raise BadStateName(f"record {both[0]} is both kept whole and torn: name it in "
                               f"'keep' or in 'torn', not both")
        return cls(cut, keep, tuple(torn))


def shown_name(text: str) -> str:
    """A state name as messages quote it: its repr, cut after 57 characters."""
    return repr(text) if len(text) <= 60 else repr(text[:57]) + "..."


def _number(what: str, digits: str) -> int:
    if len(digits) > 1 and digits[0] == "0":
        raise BadStateName(f"{what}: {digits[:20]!r}: numbers are written without leading "
                           f"zeros ({_EXAMPLE})")
    try:
        return values.count(what, digits)
    except values.BadValue as e:
        raise BadStateName(f"{e} ({_EXAMPLE})") from None


def _increasing(what: str, seqs: tuple[int, ...]) -> None:
    for a, b in itertools.pairwise(seqs):
        if b <= a:
            raise BadStateName(f"{what}: record numbers must increase, without repeats "
                               f"({b} after {a})")


def _ranges_text(values_: tuple[int, ...]) -> str:
    parts: list[str] = []
    i = 0
    while i < len(values_):
        j = i
        while j + 1 < len(values_) and values_[j + 1] == values_[j] + 1:
            j += 1
        parts.append(str(values_[i]) if i == j else f"{values_[i]}-{values_[j]}")
        i = j + 1
    return ",".join(parts)


def _parse_ranges(seq: int, text: str, budget: int) -> tuple[int, ...]:
    """``0-2,5`` -> (0, 1, 2, 5): increasing, non-empty, at most ``budget`` indexes."""
    spans: list[tuple[int, int]] = []
    for part in text.split(","):
        m = _RANGE.fullmatch(part)
        if m is None:
            raise BadStateName(f"torn record {seq}: {part!r} is not a sector index or a range "
                               f"lo-hi ({_EXAMPLE})")
        lo = _number(f"torn {seq}", m.group(1))
        hi = lo if m.group(2) is None else _number(f"torn {seq}", m.group(2))
        if hi < lo:
            raise BadStateName(f"torn record {seq}: sector range {lo}-{hi} is empty "
                               f"(write {hi}-{lo})")
        if hi == lo and m.group(2) is not None:
            raise BadStateName(f"torn record {seq}: write the one sector {lo}-{lo} as {lo}")
        if spans and lo <= spans[-1][1]:
            raise BadStateName(f"torn record {seq}: sector indexes must increase, without "
                               f"repeats ({lo} after {spans[-1][1]})")
        if spans and lo == spans[-1][1] + 1:
            raise BadStateName(f"torn record {seq}: sectors {spans[-1][0]}..{hi} are one range: "
                               f"write {spans[-1][0]}-{hi}")
        budget -= hi - lo + 1
        if budget < 0:
            raise BadStateName(f"torn record {seq}: more than {MAX_INDEXES} sector indexes in "
                               "one state name")
        spans.append((lo, hi))
    return tuple(i for lo, hi in spans for i in range(lo, hi + 1))
