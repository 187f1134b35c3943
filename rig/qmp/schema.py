"""Command arguments as data: each command declares its parameters (name, JSON type, required),
and :func:`check_arguments` refuses what QEMU's generated visitors refuse, with their words
(``Parameter 'x' is missing``, ``Parameter 'x' is unexpected``, ``Invalid parameter type for
'x', expected: integer``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rig.qmp.protocol import QmpError

#: QEMU's name of each JSON type, and the Python types that are it (bool is not an integer).
TYPES: dict[str, tuple[type, ...]] = {
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "string": (str,),
    "object": (dict,),
    "array": (list,),
}
#: The largest integer QEMU's int64 parameters take.
INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    required: bool = False

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"unknown QMP type {self.type!r}")


def check_arguments(params: tuple[Param, ...], arguments: Mapping[str, Any]) -> dict[str, Any]:
    """``arguments`` checked against ``params``: a copy with the Python names (``-`` as
    ``_``), or :class:`QmpError`."""
    known = {p.name: p for p in params}
    for name in arguments:
        if name not in known:
            raise QmpError(f"Parameter '{name}' is unexpected")
    out: dict[str, Any] = {}
    for p in params:
        if p.name not in arguments:
            if p.required:
                raise QmpError(f"Parameter '{p.name}' is missing")
            continue
        value = arguments[p.name]
        ok = isinstance(value, TYPES[p.type]) and not (
            p.type in ("integer", "number") and isinstance(value, bool))
        if ok and p.type == "integer" and not -INT64_MAX - 1 <= value <= INT64_MAX:
            ok = False
        if not ok:
            raise QmpError(f"Invalid parameter type for '{p.name}', expected: {p.type}")
        out[p.name.replace("-", "_")] = value
    return out
