"""The numbers qemu-io's commands take, parsed as qemu-io 7.2 parses them, with bounds.

* offsets and lengths: ``cvtnum`` = ``qemu_strtosz`` (suffixes, hex, fractions) then at most
  INT64_MAX; the value itself comes from :func:`rig.core.values.size_text` (bounded: at most 64
  characters, ASCII digits only, so a 5,000-digit offset or a 400-digit fraction is an error
  line, never Python's int digit limit). The error kinds are qemu's: ``-ERANGE`` ("argument too
  large") or ``-EINVAL`` ("non-numeric argument ...");
* ``sleep`` and ``-P`` pattern bytes: C's ``strtol(text, &end, 0)`` (blanks, a sign, hex, octal
  or decimal, clamped to the range of a long), then qemu-io's own checks.
"""

from __future__ import annotations

import functools
import re

from rig.core.values import MAX_OFFSET, size_text

LONG_MAX = (1 << 63) - 1
LONG_MIN = -(1 << 63)
_U64_MAX = (1 << 64) - 1

#: What ``strtol(text, &end, 0)`` consumes; a number is valid when that is all of ``text``.
#: (Compiled when first used, as :func:`_leading_digits`: start-up, issue 19.)
@functools.cache
def _strtol() -> re.Pattern[str]:
    return re.compile(r"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", re.ASCII)


@functools.cache
def _leading_digits() -> re.Pattern[str]:
    return re.compile(r"[ \t\n\v\f\r]*([0-9]+)", re.ASCII)


TOO_LARGE = "argument too large"
NON_NUMERIC = "non-numeric argument, or extraneous/unrecognized suffix"


def strtosz(text: str) -> int | str:
    """qemu-io's ``cvtnum``: the value (0..INT64_MAX), or the reason it is refused
    (:data:`TOO_LARGE` or :data:`NON_NUMERIC`)."""
    body = text
    stripped = text.lstrip(" \t\n\v\f\r")
    if stripped[:1] == "+" and stripped[1:2].isdigit():  # strtoull takes a plus sign
        body = stripped[1:]
    # strtoull skips blanks before the number; anything after it, blanks too, is trailing
    # garbage to qemu_strtosz (a "\r" left by a CRLF script line).
    if body[-1:].isspace():
        return NON_NUMERIC
    value = size_text(body)
    if value is None:
        bare = body.strip()
        # Only digits, too many of them for size_text: qemu_strtou64 says ERANGE.
        return TOO_LARGE if bare.isascii() and bare.isdigit() else NON_NUMERIC
    if value > MAX_OFFSET:
        # The integral part alone past 2^64 with something after it is EINVAL in QEMU (the
        # ERANGE from qemu_strtou64 becomes "trailing garbage"); a plain overflow is ERANGE.
        lead = _leading_digits().match(body)
        if lead is not None and int(lead.group(1)) > _U64_MAX and body[lead.end():].strip():
            return NON_NUMERIC
        return TOO_LARGE
    return value


def strtol(text: str) -> int | None:
    """``strtol(text, &end, 0)`` when it consumes all of ``text``, clamped to a long as glibc
    does; None when something is left over (or nothing was a number)."""
    match = _strtol().fullmatch(text)
    if match is None:
        return None
    sign, digits = match.groups()
    base = 16 if digits[:2] in ("0x", "0X") else 8 if digits[:1] == "0" else 10
    body = (digits[2:] if base == 16 else digits).lstrip("0") or "0"
    if len(body) > 64:  # past a long in any base: glibc clamps
        return LONG_MIN if sign == "-" else LONG_MAX
    value = int(body, base)
    value = -value if sign == "-" else value
    return max(LONG_MIN, min(LONG_MAX, value))


def sleep_seconds(ms: int, now_ns: int) -> float:
    """How long qemu-io 7.2's ``sleep MS`` waits: its timer is set to ``now + ms * 10^6`` ns in
    64-bit arithmetic, so a deadline that wraps (``sleep 9223372036854775807``) is already past
    and the command returns at once; otherwise it waits, however long that is."""
    deadline = _int64(now_ns + _int64(ms * 1_000_000))
    return max(deadline - now_ns, 0) / 1e9


def _int64(value: int) -> int:
    value &= _U64_MAX
    return value - (1 << 64) if value > LONG_MAX else value
