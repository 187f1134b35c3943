"""Field tables: one definition of a CDB or response layout gives both encode and decode.

A :class:`Field` names a run of bits. Multi-byte integers are big-endian, as everywhere in SCSI.
The field ends at bit ``bit`` (0 = least significant) of byte ``byte + span - 1``, where the span
is the number of bytes its ``width`` bits (plus ``bit``) cover. So

- ``Field("lba", 2, 32)`` is bytes 2..5, big-endian;
- ``Field("fua", 1, 1, bit=3)`` is bit 3 of byte 1;
- ``Field("pdt", 0, 5)`` is bits 4..0 of byte 0, ``Field("pq", 0, 3, bit=5)`` bits 7..5.

``ascii`` fields are space-padded on encode and lose trailing spaces and NULs on decode (as
sg_inq prints them); ``bytes`` fields are taken as they are. Bits that no field names are
zero on encode and ignored on decode; ``Layout.const`` fields (an opcode, a page code) are
always encoded with their value.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from rig.errors import RigError

FieldValue = int | str | bytes
Kind = Literal["int", "ascii", "bytes"]


class ScsiDataError(RigError, ValueError):
    """SCSI data that does not fit what it claims to be: a response too short for its page or
    of another page, a value too wide for its field. One line, naming what and why."""


@dataclass(frozen=True)
class Field:
    name: str
    byte: int
    width: int
    """bits (int) or bytes (ascii, bytes)"""
    bit: int = 0
    kind: Kind = "int"

    @property
    def span(self) -> int:
        """Bytes the field touches."""
        if self.kind != "int":
            return self.width
        return (self.width + self.bit + 7) // 8

    @property
    def end(self) -> int:
        return self.byte + self.span

    @property
    def max(self) -> int:
        return (1 << self.width) - 1

    def get(self, data: bytes | bytearray | memoryview) -> FieldValue:
        raw = bytes(data[self.byte:self.end])
        if len(raw) < self.span:  # a short response: what is missing reads as zero
            raw = raw + bytes(self.span - len(raw))
        if self.kind == "bytes":
            return raw
        if self.kind == "ascii":
            return raw.decode("ascii", errors="replace").rstrip(" \x00")
        return (int.from_bytes(raw, "big") >> self.bit) & self.max

    def put(self, buf: bytearray, value: FieldValue) -> None:
        if self.kind == "int":
            if not isinstance(value, int):
                raise TypeError(f"{self.name}: expected an int, got {value!r}")
            v = int(value)
            if not 0 <= v <= self.max:
                raise ScsiDataError(f"{self.name}={v} does not fit in {self.width} bits")
            cur = int.from_bytes(buf[self.byte:self.end], "big")
            cur &= ~(self.max << self.bit)
            cur |= v << self.bit
            buf[self.byte:self.end] = cur.to_bytes(self.span, "big")
            return
        raw = value.encode("ascii") if isinstance(value, str) else value
        if not isinstance(raw, bytes):
            raise TypeError(f"{self.name}: expected str or bytes, got {value!r}")
        if len(raw) > self.width:
            raise ScsiDataError(f"{self.name}: {len(raw)} bytes do not fit in {self.width}")
        pad = b" " if self.kind == "ascii" else b"\x00"
        buf[self.byte:self.end] = raw.ljust(self.width, pad)


class Record(Mapping[str, FieldValue]):
    """Decoded fields, with typed getters (``rec.num("lba")``, ``rec.text("vendor")``)."""

    __slots__ = ("_values", "layout")

    def __init__(self, layout: str, values: dict[str, FieldValue]) -> None:
        self.layout = layout
        self._values = values

    def __getitem__(self, key: str) -> FieldValue:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def num(self, key: str) -> int:
        v = self._values[key]
        assert isinstance(v, int), key
        return v

    def text(self, key: str) -> str:
        v = self._values[key]
        assert isinstance(v, str), key
        return v

    def raw(self, key: str) -> bytes:
        v = self._values[key]
        assert isinstance(v, bytes), key
        return v

    def as_dict(self) -> dict[str, FieldValue]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Record({self.layout!r}, {self._values!r})"


class Layout:
    """A fixed-size layout: CDB, response header or descriptor."""

    def __init__(self, name: str, size: int, fields: list[Field],
                 const: Mapping[str, int] | None = None) -> None:
        self.name = name
        self.size = size
        self.fields = tuple(fields)
        self.const = dict(const or {})
        self.by_name = {f.name: f for f in self.fields}
        for f in self.fields:
            if f.end > size:
                raise ValueError(f"{name}.{f.name} ends at byte {f.end}, past {size}")
        for key in self.const:
            if key not in self.by_name:
                raise ValueError(f"{name}: constant {key!r} is not a field")
        self._check_overlaps()
        LAYOUTS[name] = self

    def _check_overlaps(self) -> None:
        used: dict[tuple[int, int], str] = {}
        for f in self.fields:
            bits = (range(f.byte * 8, f.end * 8) if f.kind != "int" else
                    range(f.end * 8 - f.bit - f.width, f.end * 8 - f.bit))
            for b in bits:
                pos = (b // 8, b % 8)
                if pos in used:
                    raise ValueError(f"{self.name}: {f.name} overlaps {used[pos]}")
                used[pos] = f.name

    @property
    def variable(self) -> tuple[Field, ...]:
        """The fields a caller sets (all but the constants)."""
        return tuple(f for f in self.fields if f.name not in self.const)

    def encode(self, values: Mapping[str, FieldValue] | None = None,
               **kw: FieldValue) -> bytes:
        merged: dict[str, FieldValue] = {**(values or {}), **kw}
        buf = bytearray(self.size)
        for key, const in self.const.items():
            self.by_name[key].put(buf, const)
        for key, value in merged.items():
            field = self.by_name.get(key)
            if field is None:
                raise KeyError(f"{self.name} has no field {key!r}")
            if key in self.const and value != self.const[key]:
                raise ValueError(f"{self.name}.{key} is fixed at {self.const[key]:#x}")
            field.put(buf, value)
        return bytes(buf)

    def decode(self, data: bytes | bytearray | memoryview) -> Record:
        return Record(self.name, {f.name: f.get(data) for f in self.fields})

    def __repr__(self) -> str:
        return f"Layout({self.name!r}, {self.size})"


#: Every layout defined, by name (the round-trip tests walk this).
LAYOUTS: dict[str, Layout] = {}


def u(name: str, byte: int, width: int, bit: int = 0) -> Field:
    """An unsigned integer field (``width`` bits)."""
    return Field(name, byte, width, bit)


def flag(name: str, byte: int, bit: int) -> Field:
    """One bit."""
    return Field(name, byte, 1, bit)


def ascii_field(name: str, byte: int, length: int) -> Field:
    return Field(name, byte, length, kind="ascii")


def raw(name: str, byte: int, length: int) -> Field:
    return Field(name, byte, length, kind="bytes")
