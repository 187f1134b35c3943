"""Sizes as QEMU parses them (qemu_strtosz): binary suffixes, hex, fractions.

The parsing itself is :func:`rig.core.values.size_text` (bounded: at most 64 characters, ASCII
digits only); this module keeps the historical entry point and qemu-io's wording.
"""

from __future__ import annotations

from rig.core.values import size_text
from rig.errors import RigError

#: The largest size qemu_strtosz returns (a uint64_t).
MAX_SIZE = (1 << 64) - 1


class SizeError(RigError, ValueError):
    """The text is not a size."""


def parse_size(text: str | int, default_unit: int = 1) -> int:
    """``"64k"`` -> 65536, ``"0x200"`` -> 512, ``"1.5M"`` -> 1572864.

    Raises :class:`SizeError` with qemu-io's wording for anything else, and for a size past
    2^64 - 1 (QEMU's range). ``default_unit`` scales a number given without a suffix.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if not 0 <= text <= MAX_SIZE:
            raise SizeError(f"non-numeric argument, or extraneous/unrecognized suffix -- {text}"
                            if text < 0 else f"argument too large -- {text}")
        return text
    if not isinstance(text, str):
        raise SizeError(f"non-numeric argument, or extraneous/unrecognized suffix -- {text!r}")
    value = size_text(text)
    if value is None and text.strip().isascii() and text.strip().isdigit():
        raise SizeError(f"argument too large -- {_cut(text)}")  # past size_text's 64 digits
    if value is None:
        raise SizeError(f"non-numeric argument, or extraneous/unrecognized suffix -- {_cut(text)}")
    bare = text.strip()
    if default_unit != 1 and bare[-1:].isdigit() and bare[:2].lower() != "0x":
        value *= default_unit  # a plain number in default units (hex never is scaled)
    if value > MAX_SIZE:
        raise SizeError(f"argument too large -- {_cut(text)}")
    return value


def _cut(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


def format_size(n: int) -> str:
    """Compact binary size for tables: 65536 -> '64K', 1.5 GiB -> '1.5G'."""
    for shift, unit in ((60, "E"), (50, "P"), (40, "T"), (30, "G"), (20, "M"), (10, "K")):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{n}B"
