"""One bounded parser per kind of value, shared by every front end.

Config files (fault rules, blkdebug configs, SCSI rules), graph options, ``rig io`` arguments,
replay logs and CLI flags all take the same handful of value kinds. Each kind is parsed here, once,
with its bounds, so that a value that validates can never crash the request that later uses it
(``errno = 2147483648``, a delay of ``1e300`` seconds, a 5,000-digit offset, Unicode digits).

Every parser takes the key it is parsing (for the message) and the raw value (a ``str`` from a
command line or key=value option, or an ``int``/``float``/``bool`` from TOML or JSON), and returns
the checked value or raises :class:`BadValue`, a :class:`~rig.errors.ConfigError` whose one-line
message names the key, what was given and what is expected.

Bounds:

========== ================================================ =======================
kind       accepted                                         range
========== ================================================ =======================
size       ``4096``, ``"4k"``, ``"1.5M"``, ``"0x200"``      0 .. 2^63-1 bytes
offset     same as size                                     0 .. 2^63-1 bytes
count      ``3``, ``"3"``                                   0 .. 2^63-1
integer    ``-3``, ``"0x10"`` (with the caller's range)     caller's range
errno      ``5``, ``"5"``, ``"EIO"``                        1 .. 4095
seconds    ``0.05``, ``"50ms"``, ``"200us"``, ``"2s"``       0 .. 1e6 (finite)
probability ``0.1``, ``"0.1"``, ``"10%"``                   0 .. 1 (finite)
boolean    ``true``, ``"on"``, ``"yes"``, ``"1"`` ...       -
========== ================================================ =======================
"""

from __future__ import annotations

import errno as _errno
import functools
import re

from rig.errors import ConfigError

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:
    from typing import Any

#: The largest byte offset or size (QEMU's INT64_MAX: a request's end must fit in an int64).
MAX_OFFSET = (1 << 63) - 1
#: The largest count (nth, every, state numbers ...).
MAX_COUNT = (1 << 63) - 1
#: The largest errno the kernel passes (MAX_ERRNO).
MAX_ERRNO = 4095
#: The longest delay or time window, in seconds (about 11.6 days): anything longer is a typo,
#: and every sleep and timer the rig uses accepts it.
MAX_SECONDS = 1e6
#: Text longer than this is refused before any conversion (Python's int() has a digit limit;
#: float() of 400 digits is inf).
MAX_TEXT = 64

_SUFFIX = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
           "p": 1 << 50, "e": 1 << 60}


# The patterns compile when first used: all of them at import cost every rig start ~1 ms.
@functools.cache
def _size_re() -> re.Pattern[str]:
    return re.compile(r"\s*(0[xX][0-9a-fA-F]+|[0-9]+(?:\.[0-9]*)?)([bBkKmMgGtTpPeE]?)\s*",
                      re.ASCII)


@functools.cache
def _int_re() -> re.Pattern[str]:
    return re.compile(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|[0-9]+)\s*", re.ASCII)


@functools.cache
def _float_re() -> re.Pattern[str]:
    return re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*", re.ASCII)


@functools.cache
def _duration_re() -> re.Pattern[str]:
    return re.compile(r"\s*(.+?)\s*(s|ms|us|ns)?\s*", re.ASCII)


_DURATION_UNITS = {None: 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
_TRUE = frozenset({"on", "yes", "true", "y", "1"})
_FALSE = frozenset({"off", "no", "false", "n", "0"})


class BadValue(ConfigError):
    """A value of the wrong kind or out of range; ``key`` names what was being parsed."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key!r}: {message}")
        self.key = key
        self.message = message


def shown(value: Any) -> str:
    """How a message quotes a value: its repr cut to 40 characters (an int too long for
    repr() by its size). For front ends that word their own messages too."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _text(key: str, value: str, expected: str) -> str:
    if len(value) > MAX_TEXT:
        raise BadValue(key, f"expected {expected}, got a {len(value)}-character value")
    return value


def _in_range(key: str, value: int | float, lo: int | float, hi: int | float,
              expected: str) -> None:
    if not lo <= value <= hi:
        raise BadValue(key, f"expected {expected} in {lo}..{hi}, got {shown(value)}")


# ---------------------------------------------------------------------------------- integers
def size_text(text: str) -> int | None:
    """``"64k"`` -> 65536, ``"0x200"`` -> 512, ``"1.5M"`` -> 1572864 (qemu_strtosz's forms), or
    None for anything else. Bounded: at most :data:`MAX_TEXT` characters, ASCII digits only; the
    result may exceed :data:`MAX_OFFSET` (callers check their range)."""
    if len(text) > MAX_TEXT:
        return None
    match = _size_re().fullmatch(text)
    if match is None:
        return None
    number, suffix = match.groups()
    unit = _SUFFIX[suffix.lower()]
    if number[:2] in ("0x", "0X"):
        return None if suffix else int(number, 16)
    if "." in number:
        if not suffix:
            return None
        whole, _, frac = number.partition(".")
        # Exact arithmetic: no float overflow, no rounding surprise on large values.
        scaled = int(whole) * unit
        if frac:
            scaled += int(frac) * unit // 10 ** len(frac)
        return scaled
    return int(number) * unit


def size(key: str, value: Any, *, maximum: int = MAX_OFFSET) -> int:
    """A byte size or offset: an int, or text such as ``"4k"``, ``"1.5M"``, ``"0x200"``."""
    return _bytes(key, value, maximum, "a byte size")


def offset(key: str, value: Any, *, maximum: int = MAX_OFFSET) -> int:
    """A byte offset: the same forms and range as :func:`size`."""
    return _bytes(key, value, maximum, "a byte offset")


def _bytes(key: str, value: Any, maximum: int, what: str) -> int:
    expected = f"{what} (4096, '4k', '1M')"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadValue(key, f"expected {expected}, got {shown(value)}")
    n = value if isinstance(value, int) else size_text(_text(key, value, expected))
    if n is None:
        raise BadValue(key, f"expected {expected}, got {shown(value)}")
    _in_range(key, n, 0, maximum, what)
    return n


def integer(key: str, value: Any, lo: int, hi: int) -> int:
    """An integer in ``lo..hi``: an int, or decimal or ``0x`` hex text, with a sign."""
    expected = "an integer"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadValue(key, f"expected {expected}, got {shown(value)}")
    n: int
    if isinstance(value, str):
        match = _int_re().fullmatch(_text(key, value, expected))
        if match is None:
            raise BadValue(key, f"expected {expected}, got {shown(value)}")
        sign, digits = match.groups()
        n = int(digits, 0) if digits[:2] in ("0x", "0X") else int(digits)
        n = -n if sign == "-" else n
    else:
        n = value
    _in_range(key, n, lo, hi, "an integer")
    return n


def count(key: str, value: Any, *, minimum: int = 0, maximum: int = MAX_COUNT) -> int:
    """A count or index (nth, every, a state number): a non-negative integer."""
    return integer(key, value, minimum, maximum)


def errno(key: str, value: Any) -> int:
    """``"EIO"``, ``"eio"``, ``5`` or ``"5"`` -> 5: a positive errno up to 4095."""
    expected = "an errno name (EIO) or a number 1..4095"
    if isinstance(value, str) and not _int_re().fullmatch(value[:MAX_TEXT + 1]):
        name = _text(key, value, expected).strip().upper()
        code = getattr(_errno, name, None) if name.startswith("E") and name.isascii() else None
        if not isinstance(code, int):
            raise BadValue(key, f"unknown errno name {shown(value)} (e.g. EIO, ENOSPC, 5)")
        return code
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadValue(key, f"expected {expected}, got {shown(value)}")
    n = integer(key, value, -(1 << 63), 1 << 63)
    if not 0 < n <= MAX_ERRNO:
        raise BadValue(key, f"expected {expected}, got {shown(value)}")
    return n


# ---------------------------------------------------------------------------------- reals
def number(key: str, value: Any, lo: float, hi: float, expected: str = "a number") -> float:
    """A finite real in ``lo..hi``: an int, a float, or decimal text."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadValue(key, f"expected {expected}, got {shown(value)}")
    x: int | float
    if isinstance(value, str):
        if not _float_re().fullmatch(_text(key, value, expected)):
            raise BadValue(key, f"expected {expected}, got {shown(value)}")
        x = float(value)
    else:
        x = value
    import math  # here, not at the top: most runs never parse a real (start-up, issue 19)

    # An int compares exactly (no float overflow for a huge one); a float must be finite.
    if (isinstance(x, float) and not math.isfinite(x)) or not lo <= x <= hi:
        raise BadValue(key, f"expected {expected} in {lo:g}..{hi:g}, got {shown(value)}")
    return float(x)


def seconds(key: str, value: Any, *, maximum: float = MAX_SECONDS) -> float:
    """A duration: ``0.05``, ``"0.05"``, ``"50ms"``, ``"200us"``, ``"2s"``; 0 up to 1e6 s."""
    expected = "seconds (0.05, '50ms', '200us')"
    if isinstance(value, str):
        match = _duration_re().fullmatch(_text(key, value, expected))
        if match is None or not _float_re().fullmatch(match.group(1)):
            raise BadValue(key, f"expected {expected}, got {shown(value)}")
        scaled = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        import math

        if not math.isfinite(scaled) or not 0.0 <= scaled <= maximum:
            raise BadValue(key, f"expected {expected} in 0..{maximum:g}, got {shown(value)}")
        return scaled
    return number(key, value, 0.0, maximum, expected)


def probability(key: str, value: Any) -> float:
    """``0.1``, ``"0.1"`` or ``"10%"`` (nbdkit's forms): 0 to 1."""
    if isinstance(value, str) and value.strip().endswith("%"):
        return number(key, value.strip()[:-1], 0.0, 100.0, "a percentage") / 100
    return number(key, value, 0.0, 1.0, "a probability")


def boolean(key: str, value: Any) -> bool:
    """``true``/``false`` and the text forms on/off, yes/no, true/false, y/n, 1/0."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise BadValue(key, f"expected true or false (on/off, yes/no), got {shown(value)}")
