"""What a write log holds: its header and its records (see docs/crash.md for the bytes)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Kind(IntEnum):
    """The record types, as stored in the first byte of a record."""

    WRITE = 1
    WRITE_ZEROES = 2
    DISCARD = 3
    FLUSH = 4
    MARK = 5


#: Kinds that change the device's content.
DATA_KINDS = frozenset({Kind.WRITE, Kind.WRITE_ZEROES, Kind.DISCARD})


@dataclass(frozen=True)
class LogHeader:
    """What the device looked like when recording started."""

    device_size: int
    logical_block_size: int
    version: int = 1


@dataclass(frozen=True, slots=True)
class Record:
    """One completed request (or a mark), in completion order.

    ``seq`` counts records from 1. ``data`` is a write's data; ``text`` a mark's. A flush record's
    ``covers`` is the sequence number of the last record that had completed when the flush was
    submitted: the flush makes every write up to it durable (0: none).
    """

    seq: int
    kind: Kind
    offset: int = 0
    length: int = 0
    fua: bool = False
    may_unmap: bool = False
    data: bytes = b""
    text: str = ""
    covers: int = 0
    system: bool = False
    """A mark the rig wrote itself (e.g. a request that failed), not the user."""

    @property
    def end(self) -> int:
        return self.offset + self.length

    def describe(self) -> str:
        """``#7 write [4096, +512) fua``."""
        head = f"#{self.seq} "
        if self.kind is Kind.FLUSH:
            return head + f"flush (covers #{self.covers})"
        if self.kind is Kind.MARK:
            return head + ("rig mark " if self.system else "mark ") + repr(self.text)
        name = {Kind.WRITE: "write", Kind.WRITE_ZEROES: "write_zeroes",
                Kind.DISCARD: "discard"}[self.kind]
        extra = (" unmap" if self.may_unmap else "") + (" fua" if self.fua else "")
        return head + f"{name} [{self.offset}, +{self.length}){extra}"
