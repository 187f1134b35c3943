"""The name of one crash state: ``cut 9 keep 3,5 torn 7[0-2,5]`` (see :mod:`rig.crash.states`)."""

from __future__ import annotations

import re
from dataclasses import dataclass


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
        """The inverse of ``str()``: ``cut 9 keep 3,5 torn 7[0-2,5]``."""
        m = re.fullmatch(r"\s*cut (\d+)(?: keep ([\d,]+))?(?: torn ((?:\d+\[[\d,\-]+\],?)+))?\s*",
                         text)
        if m is None:
            raise ValueError(f"not a crash state: {text!r} (e.g. 'cut 9 keep 3,5 torn 7[0-2]')")
        keep = tuple(int(x) for x in m.group(2).split(",")) if m.group(2) else ()
        torn: list[tuple[int, tuple[int, ...]]] = []
        for seq, idx in re.findall(r"(\d+)\[([\d,\-]+)\]", m.group(3) or ""):
            torn.append((int(seq), _parse_ranges(idx)))
        return cls(int(m.group(1)), keep, tuple(torn))


def _ranges_text(values: tuple[int, ...]) -> str:
    parts: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ",".join(parts)


def _parse_ranges(text: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return tuple(out)
