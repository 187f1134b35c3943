"""blkdebug's configuration: QEMU's ``-readconfig`` ini dialect and the options form, both turned
into one list of rule dicts, with QEMU's error messages.

The dialect, as util/qemu-config.c parses it (quirks included, on purpose, so existing files mean
what they meant under QEMU):

- a line that is exactly a newline is skipped; a line starting with ``#`` is a comment;
- ``[group]`` or ``[group "id"]`` starts a section; only ``inject-error`` and ``set-state`` exist;
- ``key = "value"``: spaces around ``=`` are required and the value must be double-quoted. An
  unquoted value (``errno = 5``) is read as the empty string; ``errno="5"`` is a key named
  ``errno="5"``; anything else that starts with a word is that word with an empty value.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass, field
from typing import Any

from rig.core import values
from rig.core.documents import DocumentError, read_document
from rig.core.options import printable
from rig.errors import ConfigError
from rig.filters.blkdebug_events import DEFAULT_IOTYPES, EVENT_SET, IOTYPES

GROUP_KEYS: dict[str, tuple[str, ...]] = {
    "inject-error": ("event", "state", "iotype", "errno", "sector", "once", "immediately"),
    "set-state": ("event", "state", "new_state"),
}
_NUMBER_KEYS = frozenset({"state", "errno", "sector", "new_state"})
_BOOL_KEYS = frozenset({"once", "immediately"})
#: QEMU's boolean words (qapi_bool_parse).
_QEMU_BOOL = frozenset({"on", "yes", "true", "y", "off", "no", "false", "n"})
#: qemu_strtou64(value, NULL, 0): leading blanks, a sign (``-`` wraps), hex, octal or decimal,
#: nothing after the digits.
_QEMU_NUMBER = re.compile(r"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)",
                          re.ASCII)
_U64 = 1 << 64

_GROUP_ID = re.compile(r'^\[(\S{1,63}) "([^"]{1,63})"\]')
_GROUP = re.compile(r"^\[([^\]]{1,63})\]")


def scan_key_value(line: str) -> tuple[str, str] | None:
    """``sscanf(line, " %63s = \"%1023[^\"]\"")`` as glibc does it: the key is the greedy run
    of non-space characters (no backtracking), whitespace around ``=`` is optional, a missing
    quoted value leaves the value empty. None when not even a key can be read."""
    rest = line.lstrip()
    key_len = 0
    while key_len < len(rest) and key_len < 63 and not rest[key_len].isspace():
        key_len += 1
    if key_len == 0:
        return None
    key, rest = rest[:key_len], rest[key_len:].lstrip()
    if not rest.startswith("="):
        return key, ""
    rest = rest[1:].lstrip()
    if not rest.startswith('"'):
        return key, ""
    # Without a closing quote the value runs to the end of the line, newline included.
    return key, rest[1:].split('"', 1)[0][:1023]


@dataclass
class Section:
    group: str
    values: dict[str, Any] = field(default_factory=dict)
    #: Where the rule was written, for messages: ``FILE:LINE [group]`` or ``group.N``.
    where: str = ""


def parse_config_text(text: str, source: str = "") -> list[Section]:
    """Parse the ini dialect into sections, validating keys and value types as QEMU does.

    ``source`` (the file name) and the section's header line name each section (``where``)."""
    sections: list[Section] = []
    current: Section | None = None
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        if line == "\n" or line.startswith("#"):
            continue
        m = _GROUP_ID.match(line) or _GROUP.match(line)
        if m:
            group = m.group(1)
            if group not in GROUP_KEYS:
                raise ConfigError(f"There is no option group '{printable(group)}'")
            # The whole path (up to PATH_MAX): a warning naming a rule must say which file.
            name = printable(source or "config", limit=4096)
            current = Section(group, where=f"{name}:{number} [{group}]")
            sections.append(current)
            continue
        scanned = scan_key_value(line)
        if scanned is None:
            raise ConfigError("parse error")
        key, value = scanned
        if current is None:
            raise ConfigError("no group defined")
        set_value(current, key, value)
    return sections


def set_value(section: Section, key: str, value: Any) -> None:
    """qemu_opt_set: the key must belong to the group; numbers and booleans are checked now."""
    if key not in GROUP_KEYS[section.group]:
        raise ConfigError(f"Invalid parameter '{printable(key)}'")
    if key in _NUMBER_KEYS:
        value = parse_number(key, value)
    elif key in _BOOL_KEYS:
        value = parse_bool(key, value)
    elif not isinstance(value, str):
        raise ConfigError(f"Invalid parameter type for '{key}', expected: string")
    section.values[key] = value


def parse_number(key: str, value: Any) -> int:
    """A QEMU_OPT_NUMBER as qemu_strtou64 reads it (``"0x10"``, ``"010"`` octal, ``"-1"`` wraps
    to 2^64-1), bounded: text of any length is refused or converted in time linear in its
    length, never with Python's int digit limit. ``errno`` must then be 0..4095."""
    if isinstance(value, bool):
        raise ConfigError(f"Parameter '{key}' expects a number")
    if isinstance(value, int):
        number = value
    else:
        match = _QEMU_NUMBER.fullmatch(str(value))
        if match is None:
            raise ConfigError(f"Parameter '{key}' expects a number")
        sign, digits = match.groups()
        base = 16 if digits[:2] in ("0x", "0X") else 8 if digits[:1] == "0" else 10
        body = (digits[2:] if base == 16 else digits).lstrip("0") or "0"
        if len(body) > 40:  # past 2^64 in any base
            raise ConfigError(f"Value '{_cut(value)}' is too large for parameter '{key}'")
        number = int(body, base)
        if number >= _U64:
            raise ConfigError(f"Value '{_cut(value)}' is too large for parameter '{key}'")
        if sign == "-":
            number = -number
    if not -_U64 < number < _U64:
        raise ConfigError(f"Value '{_cut(value)}' is too large for parameter '{key}'")
    number &= _U64 - 1  # qemu_strtou64 wraps a negative value
    if key == "errno" and number > values.MAX_ERRNO:
        raise ConfigError(f"Parameter 'errno' expects an errno from 0 to {values.MAX_ERRNO}, "
                          f"got '{_cut(value)}' (QEMU would inject it "
                          "truncated to 32 bits, or nothing when negative)")
    return number


def _quoted(text: str) -> str:
    """A config value in a message: one line. An unterminated quote's value ends in the line's
    newline, which QEMU prints as a line break that qemu-io's output then ends with; the rig
    drops it and escapes any other control character."""
    return printable(text.rstrip("\n"))


def _cut(value: Any) -> str:
    """A value as a message quotes it: at most 40 characters (a huge int by its size)."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"<an integer of {value.bit_length()} bits>"
    return printable(str(value), 40)


def parse_bool(key: str, value: Any) -> bool:
    """QEMU's on/off, yes/no, true/false, y/n (:func:`rig.core.values.boolean`)."""
    if isinstance(value, bool) or (isinstance(value, str) and value.lower() in _QEMU_BOOL):
        return values.boolean(key, value)
    raise ConfigError(f"Parameter '{key}' expects 'on' or 'off'")


def read_config_file(path: str) -> list[Section]:
    try:
        # A regular file only: a FIFO would block, /dev/zero would never end.
        raw = read_document(path, "blkdebug config file")
    except DocumentError as e:
        raise ConfigError(f"Could not read blkdebug config file: {e.reason}") from None
    return parse_config_text(raw.decode("utf-8", errors="surrogateescape"), path)


@dataclass(frozen=True)
class RuleSpec:
    """One validated rule, as blkdebug's add_rule() builds it."""

    action: str  # "inject" | "set_state" | "suspend"
    event: str
    state: int = 0
    errno: int = errno.EIO
    offset: int = -1
    once: bool = False
    immediately: bool = False
    iotypes: frozenset[str] = DEFAULT_IOTYPES
    new_state: int = 0
    tag: str = ""
    #: Where the rule was written (:attr:`Section.where`); not part of the rule's identity.
    where: str = field(default="", compare=False)


def build_rule(section: Section) -> RuleSpec:
    """add_rule(): event and iotype names are checked here, after parsing."""
    v = section.values
    event = v.get("event")
    if event is None:
        raise ConfigError("Missing event name for rule")
    if event not in EVENT_SET:
        raise ConfigError(f"invalid parameter value: {_quoted(event)}")
    state = int(v.get("state", 0))
    if section.group == "set-state":
        return RuleSpec("set_state", event, state=state, new_state=int(v.get("new_state", 0)),
                        where=section.where)
    iotypes = DEFAULT_IOTYPES
    if "iotype" in v:
        if v["iotype"] not in IOTYPES:
            raise ConfigError(f"invalid parameter value: {_quoted(v['iotype'])}")
        iotypes = frozenset({v["iotype"]})
    sector = int(v.get("sector", (1 << 64) - 1))
    offset = -1 if sector == (1 << 64) - 1 else sector * 512
    return RuleSpec(
        "inject", event, state=state, errno=int(v.get("errno", errno.EIO)), offset=offset,
        once=bool(v.get("once", False)), immediately=bool(v.get("immediately", False)),
        iotypes=iotypes, where=section.where,
    )


def sections_from_options(group: str, items: dict[str, Any]) -> list[Section]:
    """``inject-error.0.event=...`` (and the unindexed ``inject-error.event=...``) -> sections.

    ``items`` maps the part after ``group.`` to values.
    """
    indexed: dict[int, Section] = {}
    plain = Section(group, where=group)
    for key, value in items.items():
        head, _, rest = key.partition(".")
        if rest and head.isascii() and head.isdigit() and len(head) <= 18:
            index = int(head)
            set_value(indexed.setdefault(index, Section(group, where=f"{group}.{index}")), rest,
                      value)
        else:
            set_value(plain, key, value)
    out = [indexed[i] for i in sorted(indexed)]
    if plain.values:
        out.insert(0, plain)
    return out
