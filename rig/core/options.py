"""Node options: QEMU's blockdev shape, flattened to dotted keys and consumed by typed getters.

A graph is a nested dict (``{"driver": "raw", "file": {"driver": "file", "filename": "x"}}``), a
``json:{...}`` string, or QEMU's ``--image-opts`` text (``driver=raw,file.filename=x``). All three
become one flat ``{"file.filename": "x", ...}`` map. Each driver takes the keys it knows with typed
getters; a child's keys are handed to the child; a key nobody took is a :class:`ConfigError` naming
it, as QEMU does. Values may be typed (JSON) or strings (command line).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from rig.core.units import SizeError, parse_size
from rig.errors import ConfigError

_TRUE = {"on", "yes", "true", "y"}
_FALSE = {"off", "no", "false", "n"}

#: Options a child inherits from its parent unless it sets them itself (QEMU's inherited flags).
INHERITED = ("read-only", "cache.direct", "cache.no-flush", "discard")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"file": {"filename": "x"}, "l": [1]}`` -> ``{"file.filename": "x", "l.0": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if not isinstance(key, str):
            raise ConfigError(f"option names must be strings, got {key!r}")
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, full + "."))
        elif isinstance(value, list):
            out.update(flatten({str(i): v for i, v in enumerate(value)}, full + "."))
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
            raise ConfigError(f"Invalid parameter '{key}' (expected key=value)")
        out[key] = value
    return out


def parse_json_filename(text: str) -> dict[str, Any]:
    """``json:{...}`` -> dict, with QEMU's message on bad JSON."""
    try:
        value = json.loads(text[len("json:") :])
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"Could not parse the JSON options: {e.msg} at column {e.colno}"
        ) from None
    if not isinstance(value, dict):
        raise ConfigError("Could not parse the JSON options: expected an object")
    return value


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
        return f"{self.path}{key}"

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
        return value

    def bool(self, key: _Str, default: _Bool = False) -> _Bool:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"Parameter '{self._name(key)}' expects 'on' or 'off'")

    def int(self, key: _Str, default: _Int = 0, *, minimum: _Int | None = 0) -> _Int:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool):
            raise ConfigError(f"Parameter '{self._name(key)}' expects a number")
        if isinstance(value, str):
            try:
                value = int(value, 0)
            except ValueError:
                raise ConfigError(f"Parameter '{self._name(key)}' expects a number") from None
        if not isinstance(value, int):
            raise ConfigError(f"Parameter '{self._name(key)}' expects a number")
        if minimum is not None and value < minimum:
            raise ConfigError(f"Parameter '{self._name(key)}' must be at least {minimum}")
        return value

    def size(self, key: _Str, default: _Int = 0) -> _Int:
        value = self.raw(key)
        if value is None:
            return default
        try:
            return parse_size(value)
        except SizeError:
            raise ConfigError(
                f"Parameter '{self._name(key)}' expects a non-negative number below 2^64 "
                "(optional suffix k, M, G, T, P, E)"
            ) from None

    def enum(self, key: _Str, choices: Iterable[_Str], default: _Str) -> _Str:
        value = self.str(key, default)
        assert value is not None
        allowed = list(choices)
        if value not in allowed:
            raise ConfigError(
                f"Parameter '{self._name(key)}' does not accept value '{value}' "
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
