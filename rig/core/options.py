"""Node options: QEMU's blockdev shape, flattened to dotted keys and consumed by typed getters.

A graph is a nested dict (``{"driver": "raw", "file": {"driver": "file", "filename": "x"}}``), a
``json:{...}`` string, or QEMU's ``--image-opts`` text (``driver=raw,file.filename=x``). All three
become one flat ``{"file.filename": "x", ...}`` map. Each driver takes the keys it knows with typed
getters; a child's keys are handed to the child; a key nobody took is a :class:`ConfigError` naming
it, as QEMU does. Values may be typed (JSON) or strings (command line).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from rig.core import values
from rig.core.documents import MAX_DEPTH, loads_json
from rig.errors import ConfigError

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:
    from typing import Any

#: QEMU's boolean words (qapi_bool_parse); the rig's other front ends also take 1/0.
_QEMU_BOOL = frozenset({"on", "yes", "true", "y", "off", "no", "false", "n"})
#: QEMU's number and size options are uint64.
_MAX_U64 = (1 << 64) - 1

#: Options a child inherits from its parent unless it sets them itself (QEMU's inherited flags).
INHERITED = ("read-only", "cache.direct", "cache.no-flush", "discard")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"file": {"filename": "x"}, "l": [1]}`` -> ``{"file.filename": "x", "l.0": 1}``.

    Iterative, and at most :data:`~rig.core.documents.MAX_DEPTH` levels deep (a deeper graph is a
    ConfigError, never a RecursionError)."""
    out: dict[str, Any] = {}
    stack: list[tuple[str, Iterator[tuple[Any, Any]]]] = [(prefix, iter(tree.items()))]
    while stack:
        head, items = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
            continue
        key, value = item
        if not isinstance(key, str | int) or isinstance(key, bool):
            raise ConfigError(f"option names must be strings, got {key!r}")
        full = f"{head}{key}"
        if isinstance(value, Mapping | list):
            if len(stack) > MAX_DEPTH:
                raise ConfigError(f"option '{printable(full)}': nested more than {MAX_DEPTH} "
                                  "levels deep")
            inner = value.items() if isinstance(value, Mapping) else enumerate(value)
            stack.append((full + ".", iter(inner)))
        else:
            out[full] = value
    return out


def parse_keyval(text: str) -> dict[str, str]:
    """QEMU's ``key=value,key2=value2`` with ``,,`` escaping a comma."""
    out: dict[str, str] = {}
    parts: list[str] = []
    current = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == ",":
            if i + 1 < len(text) and text[i + 1] == ",":
                current += ","
                i += 2
                continue
            parts.append(current)
            current = ""
        else:
            current += ch
        i += 1
    parts.append(current)
    for part in parts:
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigError(f"Invalid parameter '{printable(key)}' (expected key=value)")
        out[key] = value
    return out


def parse_json_filename(text: str) -> dict[str, Any]:
    """``json:{...}`` -> dict, with QEMU's message on bad JSON (depth-capped: a document nested
    1,000 deep is a ConfigError, never a RecursionError)."""
    body = text[len("json:") :]
    if "'" in body:
        body = qemu_json_to_json(body)
    try:
        value = loads_json(body, "JSON")
    except ConfigError as e:
        why = str(e).removeprefix("JSON: ").removeprefix("invalid JSON at ")
        raise ConfigError(f"Could not parse the JSON options: {why}") from None
    if not isinstance(value, dict):
        raise ConfigError("Could not parse the JSON options: expected an object")
    return value


def qemu_json_to_json(text: str) -> str:
    """QEMU's JSON dialect (qobject/json-lexer.c) as standard JSON: a string may be in single
    quotes (``{'driver': 'raw'}``), where ``\\'`` is a quote and ``"`` needs no escape. Text that
    is not inside a single-quoted string is copied as it is (a bad document stays bad)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':  # a double-quoted string: copied, escapes and all
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif ch == "'":
            j = i + 1
            piece = ['"']
            while j < n and text[j] != "'":
                if text[j] == "\\" and j + 1 < n:
                    piece.append("'" if text[j + 1] == "'" else text[j:j + 2])
                    j += 2
                    continue
                piece.append('\\"' if text[j] == '"' else text[j])
                j += 1
            if j >= n:  # unterminated: leave it for the JSON parser to refuse
                out.append(text[i:])
                break
            piece.append('"')
            out.append("".join(piece))
            i = j + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def printable(text: str, limit: int = 80) -> str:
    """``text`` as a one-line message may quote it: control characters escaped, cut short."""
    if not text.isprintable():
        text = repr(text)[1:-1]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _looks_numeric(text: str) -> bool:
    """Digits only (after a sign): a number that was refused for its size, not its form."""
    body = text.strip()
    body = body[1:] if body[:1] in "+-" else body
    return body.isascii() and body.isdigit()


def _cut(value: Any) -> str:
    """A value as a message quotes it: text cut short, a huge int by its size."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of {value.bit_length()} bits>"
    return printable(value if isinstance(value, str) else repr(value), 60)


# Aliases: Options has methods named str/int/bool, which would shadow the builtins.
_Str = str
_Int = int
_Bool = bool


class Options:
    """The flat options of one node, with the keys still to be consumed."""

    def __init__(
        self, flat: Mapping[_Str, Any], path: _Str = "", inherited: Mapping[_Str, Any] | None = None
    ) -> None:
        self._flat = dict(flat)
        self._unused = set(self._flat)
        self.path = path
        self._inherited = dict(inherited or {})

    def _name(self, key: _Str) -> _Str:
        return printable(f"{self.path}{key}")

    def has(self, key: _Str) -> _Bool:
        return key in self._flat

    def keys(self) -> Iterable[_Str]:
        return self._flat.keys()

    def _take(self, key: _Str) -> Any:
        self._unused.discard(key)
        return self._flat.get(key)

    def raw(self, key: _Str, default: Any = None) -> Any:
        value = self._take(key)
        if value is None:
            return self._inherited.get(key, default)
        return value

    def str(
        self, key: _Str, default: _Str | None = None, *, required: _Bool = False
    ) -> _Str | None:
        value = self.raw(key)
        if value is None:
            if required:
                raise ConfigError(f"Parameter '{self._name(key)}' is missing")
            return default
        if not isinstance(value, str):
            raise ConfigError(f"Invalid parameter type for '{self._name(key)}', expected: string")
        if "\x00" in value:  # no path, name or word has one (and os.stat() would raise)
            raise ConfigError(f"Parameter '{self._name(key)}' must not contain a NUL byte")
        return value

    def bool(self, key: _Str, default: _Bool = False) -> _Bool:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or (isinstance(value, str)
                                        and value.strip().lower() in _QEMU_BOOL):
            return values.boolean(self._name(key), value)
        raise ConfigError(f"Parameter '{self._name(key)}' expects 'on' or 'off'")

    def int(self, key: _Str, default: _Int = 0, *, minimum: _Int | None = 0) -> _Int:
        value = self.raw(key)
        if value is None:
            return default
        name = self._name(key)
        try:
            number = values.integer(name, value, -_MAX_U64, _MAX_U64)
        except values.BadValue:
            if (isinstance(value, str) and _looks_numeric(value)) or isinstance(value, _Int):
                raise ConfigError(f"Value '{_cut(value)}' is too large for parameter "
                                  f"'{name}'") from None
            raise ConfigError(f"Parameter '{name}' expects a number") from None
        if minimum is not None and number < minimum:
            raise ConfigError(f"Parameter '{name}' must be at least {minimum}")
        return number

    def size(self, key: _Str, default: _Int = 0) -> _Int:
        value = self.raw(key)
        if value is None:
            return default
        try:
            return values.size(self._name(key), value, maximum=_MAX_U64)
        except values.BadValue:
            raise ConfigError(
                f"Parameter '{self._name(key)}' expects a non-negative number below 2^64 "
                f"(optional suffix k, M, G, T, P, E), got {_cut(value)!r}"
            ) from None

    def enum(self, key: _Str, choices: Iterable[_Str], default: _Str) -> _Str:
        value = self.str(key, default)
        assert value is not None
        allowed = list(choices)
        if value not in allowed:
            raise ConfigError(
                f"Parameter '{self._name(key)}' does not accept value '{printable(value)}' "
                f"(one of: {', '.join(allowed)})"
            )
        return value

    def child(self, role: _Str, inherited: Mapping[_Str, Any] | None = None) -> Options | None:
        """The options under ``role.`` as a child's Options; a plain string is a filename."""
        prefix = role + "."
        sub = {k[len(prefix) :]: v for k, v in self._flat.items() if k.startswith(prefix)}
        plain = self._flat.get(role)
        if plain is not None:
            self._unused.discard(role)
            if not isinstance(plain, str):
                raise ConfigError(f"Invalid parameter type for '{self._name(role)}'")
            sub.setdefault("filename", plain)
        if not sub:
            return None
        for key in list(self._unused):
            if key.startswith(prefix):
                self._unused.discard(key)
        return Options(sub, f"{self.path}{prefix}", inherited)

    def check_all_used(self, kind: _Str, driver: _Str) -> None:
        """Raise for the first option no one consumed (QEMU's message)."""
        if not self._unused:
            return
        key = sorted(self._unused)[0]
        verb = "does not support" if kind == "format" else "doesn't support"
        raise ConfigError(f"Block {kind} '{driver}' {verb} the option '{self._name(key)}'")
