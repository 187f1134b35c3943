"""I/O operations as data, and how to apply one to a backend or to a :class:`DiskModel`.

Property tests draw these (see :mod:`rig.testing.strategies`), print them on failure, and replay
them on every device under test.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from rig.core.backend import BlockBackend
from rig.core.node import ReqFlags
from rig.testing.model import DiskModel


@lru_cache(maxsize=512)
def _cycle(seed: int) -> bytes:
    start, stride = seed & 0xFF, (seed >> 8) | 1
    return bytes((start + i * stride) & 0xFF for i in range(256))


def pattern(seed: int, length: int) -> bytes:
    """``length`` bytes of a seed-specific sequence that takes every value once per 256 bytes.

    Neighbouring bytes differ, so data that lands shifted or torn reads back different.
    """
    cycle = _cycle(seed & 0xFFFF)
    reps = length // 256 + 1
    return (cycle * reps)[:length]


@dataclass(frozen=True)
class Read:
    offset: int
    length: int


@dataclass(frozen=True)
class Write:
    offset: int
    length: int
    seed: int
    fua: bool = False

    @property
    def data(self) -> bytes:
        return pattern(self.seed, self.length)


@dataclass(frozen=True)
class WriteZeroes:
    offset: int
    length: int
    may_unmap: bool = False
    fua: bool = False

    @property
    def flags(self) -> ReqFlags:
        flags = ReqFlags.MAY_UNMAP if self.may_unmap else ReqFlags.NONE
        return flags | ReqFlags.FUA if self.fua else flags


@dataclass(frozen=True)
class Discard:
    offset: int
    length: int


@dataclass(frozen=True)
class Flush:
    pass


Op = Read | Write | WriteZeroes | Discard | Flush


def apply_to_backend(op: Op, blk: BlockBackend) -> bytes | None:
    """Run ``op`` on ``blk``; a read returns its data."""
    match op:
        case Read(offset, length):
            return blk.pread(offset, length)
        case Write(offset, _, _, fua):
            blk.pwrite(offset, op.data, fua=fua)
        case WriteZeroes(offset, length):
            blk.write_zeroes(offset, length, op.flags)
        case Discard(offset, length):
            blk.discard(offset, length)
        case Flush():
            blk.flush()
    return None


def apply_to_model(op: Op, model: DiskModel) -> bytes | None:
    """Run ``op`` on the model; a read returns what the device must return."""
    match op:
        case Read(offset, length):
            return model.read(offset, length)
        case Write(offset, _, _, fua):
            model.write(offset, op.data, fua=fua)
        case WriteZeroes(offset, length, _, fua):
            model.zero(offset, length, fua=fua)
        case Discard(offset, length):
            model.discard(offset, length)
        case Flush():
            model.flush()
    return None
