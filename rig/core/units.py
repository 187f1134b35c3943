"""Sizes as QEMU parses them (qemu_strtosz): binary suffixes, hex, fractions."""

from __future__ import annotations

import re

_SUFFIX = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
           "p": 1 << 50, "e": 1 << 60}
_SIZE_RE = re.compile(r"^\s*(0[xX][0-9a-fA-F]+|[0-9]+(?:\.[0-9]*)?)([bBkKmMgGtTpPeE]?)$")


class SizeError(ValueError):
    """The text is not a size."""


def parse_size(text: str | int, default_unit: int = 1) -> int:
    """``"64k"`` -> 65536, ``"0x200"`` -> 512, ``"1.5M"`` -> 1572864.

    Raises :class:`SizeError` with qemu-io's wording for anything else.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise SizeError(f"non-numeric argument, or extraneous/unrecognized suffix -- {text}")
        return text
    match = _SIZE_RE.match(str(text))
    if match is None:
        raise SizeError(f"non-numeric argument, or extraneous/unrecognized suffix -- {text}")
    number, suffix = match.groups()
    unit = _SUFFIX[suffix.lower()] if suffix else default_unit
    if number.lower().startswith("0x"):
        if suffix:
            raise SizeError(f"non-numeric argument, or extraneous/unrecognized suffix -- {text}")
        return int(number, 16)
    if "." in number:
        if not suffix:
            raise SizeError(f"non-numeric argument, or extraneous/unrecognized suffix -- {text}")
        value = float(number) * unit
        return int(value)
    return int(number) * unit


def format_size(n: int) -> str:
    """Compact binary size for tables: 65536 -> '64K', 1.5 GiB -> '1.5G'."""
    for shift, unit in ((60, "E"), (50, "P"), (40, "T"), (30, "G"), (20, "M"), (10, "K")):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{n}B"
