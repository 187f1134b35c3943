"""I/O operations as data, and how to apply one to a backend or to a :class:`DiskModel`.

Property tests draw these (see :mod:`rig.testing.strategies`), print them on failure, and replay
them on every device under test.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

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

#: Operation name in a serialized op (``{"op": "write", ...}``) -> its class.
OP_TYPES: dict[str, type[Op]] = {
    "read": Read, "write": Write, "write_zeroes": WriteZeroes, "discard": Discard,
    "flush": Flush,
}
_OP_NAMES = {cls: name for name, cls in OP_TYPES.items()}


def op_to_dict(op: Op) -> dict[str, Any]:
    """``Write(0, 512, 7)`` -> ``{"op": "write", "offset": 0, "length": 512, "seed": 7,
    "fua": False}`` (JSON-ready; :func:`op_from_dict` reverses it)."""
    return {"op": _OP_NAMES[type(op)], **asdict(op)}


def op_from_dict(data: dict[str, Any]) -> Op:
    """The op a :func:`op_to_dict` dict describes. Raises ValueError naming what is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"an operation must be a JSON object, got {data!r}")
    name = data.get("op")
    cls = OP_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown operation {name!r} (known: {', '.join(OP_TYPES)})")
    kwargs = {k: v for k, v in data.items() if k != "op"}
    known = {f.name: f.type for f in fields(cls)}
    for key, value in kwargs.items():
        if key not in known:
            raise ValueError(f"{name}: unknown field {key!r} (known: {', '.join(known)})")
        want = bool if known[key] == "bool" else int
        if type(value) is not want:
            raise ValueError(f"{name}: {key} must be {want.__name__}, got {value!r}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"{name}: {e}") from None


def describe_op(op: Op) -> str:
    """A short qemu-io-like description: ``write -P seed 7 [4096, +512) fua``."""
    match op:
        case Read(offset, length):
            return f"read [{offset}, +{length})"
        case Write(offset, length, seed, fua):
            return f"write seed {seed} [{offset}, +{length})" + (" fua" if fua else "")
        case WriteZeroes(offset, length, may_unmap, fua):
            extra = (" unmap" if may_unmap else "") + (" fua" if fua else "")
            return f"write_zeroes [{offset}, +{length}){extra}"
        case Discard(offset, length):
            return f"discard [{offset}, +{length})"
    return "flush"


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
