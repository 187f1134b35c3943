"""Hostile values and documents for the fuzz properties: what fuzzing found (huge, negative,
NaN/inf and Unicode-digit numbers, wrong types, deep nesting, very long strings), plus the text
forms the value parsers accept, so that a generated document reaches every parser.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import strategies as st


def nested(depth: int, leaf: Any = 1, kind: str = "list") -> Any:
    """``[[[...leaf...]]]`` (or ``{"a": {"a": ...}}``) ``depth`` levels deep, built without
    recursion."""
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


#: Numbers and number-shaped text that broke a parser once, or sit on a bound.
NUMBERS: list[Any] = [
    0, 1, -1, 4095, 4096, 2**31, 2**31 - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64,
    -(2**63), 10**30, 10**100, 0.5, -0.0, 1.5, 1e300, -1e300, 5e-324, math.inf, -math.inf,
    math.nan,
    "0", "1", "-1", "--5", "+5", "-0", "1E", "8E", "16E", "1.5E", "1e300", "1e3", "nan", "inf",
    "-inf", "Infinity", "NaN", "0x", "0x10", "0X1F", "010", "08", "0x1k", "1.", ".5", "1.5",
    "1.5k", "1k", "64K", "1kB", "4096b", "2147483136", "2147483137", "9223372036854775807",
    "9223372036854775808", "18446744073709551615", "18446744073709551616",
    "1" * 5000, "1" * 400 + ".5k", "9" * 70, "0" * 70 + "1", "²", "٣", "1²", "\uff11\uff12",
    "5\n", " 5",
    "5 ", "\t5", "5ms", "50ms", "200us", "2s", "1e300s", "-1ms", "nanms", "10%", "150%", "-5%",
    "nan%", "%", "1_000", "0b101", "0o17", "1,5", "1 5",
]
#: Words and shapes that are not numbers.
OTHERS: list[Any] = [
    True, False, "", " ", "\n", "on", "off", "yes", "no", "true", "false", "1", "0", "maybe",
    "EIO", "eio", "ENOSPC", "E2BIG", "EWHAT", "ERRORCODE", "errorcode", "E", "O_DIRECT",
    "EIO\x00", "read", "write", "flush", "read|write", "zero,discard", "bogus", "|", ",",
    "DID_TIME_OUT", "did_no_connect", "none", "03/11/00", "3-11-0", "ff/ff/ff", "10/00/00",
    "test-unit-ready", "read-10", "0x28", "28h", "0x100",
    "x" * 10_000, "\udc80", "\x00", "a\nb", "'", '"', "\\", "[", "{",
    [], [1], ["read"], [[]], [3, 17, 0], [300, 1, 1], ["a", "b", "c"], {}, {"a": 1},
    {"action": "error"}, nested(40), nested(1000), nested(40, kind="dict"),
]
hostile = st.sampled_from(NUMBERS + OTHERS)
hostile_text = st.sampled_from([v for v in NUMBERS + OTHERS if isinstance(v, str)])


def toml_value(value: Any) -> str:
    """TOML for ``value`` (nested arrays and inline tables iteratively enough for 1,000
    levels: the text is built from the inside out)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string (JSON escapes are TOML escapes)
    chain, inner = _chain(value)
    if len(chain) > 30:  # a deep one-element chain: build it flat
        opens = "".join("{a = " if isinstance(v, dict) else "[" for v in chain)
        closes = "".join("}" if isinstance(v, dict) else "]" for v in reversed(chain))
        return opens + toml_value(inner) + closes
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(value)


def _chain(value: Any) -> tuple[list[Any], Any]:
    """The one-element lists and dicts ``value`` opens with, outermost first (at most 2,000),
    and what the innermost of them holds."""
    chain = []
    while isinstance(value, list | dict) and len(value) == 1 and len(chain) < 2000:
        chain.append(value)
        value = next(iter(value.values())) if isinstance(value, dict) else value[0]
    return chain, value


def to_toml(array: str, tables: list[Any]) -> str:
    """``[[array]]`` tables (a table that is not a dict goes in as ``array = [...]``)."""
    if not all(isinstance(t, dict) for t in tables):
        return f"{array} = {toml_value(tables)}\n"
    out = []
    for table in tables:
        out.append(f"[[{array}]]")
        out.extend(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in table.items())
    return "\n".join(out) + "\n"


def to_json(value: Any) -> str:
    """JSON text (NaN/Infinity as Python writes them: the loader must refuse them); a deep
    one-element chain is written flat, so 1,000 levels need no recursion here."""
    chain, inner = _chain(value)
    if len(chain) > 30:
        opens = "".join(f"{{{json.dumps(str(next(iter(v))))}: " if isinstance(v, dict) else "["
                        for v in chain)
        closes = "".join("}" if isinstance(v, dict) else "]" for v in reversed(chain))
        return opens + to_json(inner) + closes
    if isinstance(value, list):
        return "[" + ", ".join(to_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {to_json(v)}"
                               for k, v in value.items()) + "}"
    return json.dumps(value)


@st.composite
def mutated(draw: st.DrawFn, tables: list[dict[str, Any]], keys: list[str]) -> list[Any]:
    """``tables`` with one hostile change: a value replaced, a key added (known or unknown),
    a table replaced, or the list nested deeper."""
    how = draw(st.sampled_from(["value", "value", "value", "key", "table", "nest", "none"]))
    out: list[Any] = [dict(t) for t in tables]
    if not out or how == "none":
        return out
    i = draw(st.integers(0, len(out) - 1))
    if how == "value" and out[i]:
        key = draw(st.sampled_from(sorted(out[i])))
        out[i][key] = draw(hostile)
    elif how == "key":
        key = draw(st.sampled_from([*keys, "bogus", "", "²", "x" * 300]))
        out[i][key] = draw(hostile)
    elif how == "table":
        out[i] = draw(hostile)
    elif how == "nest":
        return [nested(draw(st.sampled_from([1, 5, 40, 1000])), out[i])]
    return out


def byte_garbage(text: str, data: st.DataObject) -> bytes:
    """``text`` with a few bytes flipped, cut or inserted (non-UTF-8 bytes included)."""
    raw = bytearray(text.encode("utf-8", "surrogatepass"))
    for _ in range(data.draw(st.integers(1, 4))):
        if not raw:
            break
        pos = data.draw(st.integers(0, len(raw) - 1))
        what = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if what == "flip":
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif what == "cut":
            del raw[pos:pos + data.draw(st.integers(1, 16))]
        else:
            raw[pos:pos] = data.draw(st.sampled_from([b"\xff", b"[", b"{", b"\"", b"=", b"\n",
                                                      b"1" * 50, b"\x00"]))
    return bytes(raw)
