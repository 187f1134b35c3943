"""Rules from TOML or JSON files and from flattened graph options: ONE schema, checked once.

A rule is a table of keys (``docs/filters/faults.md`` has the full list)::

    [[rules]]
    name = "slow-reads"
    action = "delay"
    op = "read"
    start = "1M"
    end = "2M"
    probability = "10%"
    seconds = "50ms"

Files hold ``rules = [...]`` (TOML ``[[rules]]``, JSON ``{"rules": [...]}`` or a bare JSON list).
Graph options hold the same tables under ``rules.N.`` (``rules.0.action=error``,
``rules.0.op.0=read`` or ``rules.0.op=read|write``). Values may be typed or strings: sizes take
suffixes (``4k``, ``1M``), times ``s``/``ms``/``us``, probabilities ``0.1`` or ``10%``, booleans
``true``/``on``, errnos a name or number.

Every mistake is one :class:`~rig.errors.ConfigError` naming the rule (its index, from 0, and
name) and the key: ``rule 3 ('slow-reads'): 'probability': must be between 0 and 1, got 1.5``.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rig.core.units import SizeError, parse_size
from rig.errors import ConfigError
from rig.faults.rules import (
    ACTIONS,
    Action,
    Op,
    Rule,
    RuleError,
    errno_name,
    errno_value,
)

_TRUE = {"on", "yes", "true", "y", "1"}
_FALSE = {"off", "no", "false", "n", "0"}
_DURATION = re.compile(r"^\s*(.+?)\s*(s|ms|us|ns)?\s*$")
_DURATION_UNITS = {None: 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


# ---------------------------------------------------------------------------- value parsers
def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise RuleError(key, f"expected a string, got {value!r}")
    return value


def _integer(key: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuleError(key, f"expected an integer, got {value!r}")
    return value


def _size(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise RuleError(key, f"expected a byte offset or size (4096, '4k', '1M'), got {value!r}")
    try:
        return parse_size(value)
    except SizeError:
        raise RuleError(key, f"expected a byte offset or size (4096, '4k', '1M'), "
                        f"got {value!r}") from None


def parse_boolean(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise RuleError(key, f"expected true or false, got {value!r}")


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise RuleError(key, f"expected a number, got {value!r}")
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise RuleError(key, f"expected a number, got {value!r}")


def parse_probability(key: str, value: Any) -> float:
    """``0.1``, ``"0.1"`` or ``"10%"`` (nbdkit's forms)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        return _number(key, value.strip()[:-1]) / 100
    return _number(key, value)


def parse_seconds(key: str, value: Any) -> float:
    """``0.05``, ``"0.05"``, ``"50ms"``, ``"200us"``."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        try:
            if m is not None:
                return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        except ValueError:
            pass
        raise RuleError(key, f"expected seconds (0.05, '50ms', '200us'), got {value!r}")
    return _number(key, value)


def _op(key: str, value: Any) -> frozenset[Op]:
    items: list[Any]
    if isinstance(value, str):
        items = [p.strip() for p in re.split(r"[|,]", value)]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise RuleError(key, f"expected an op name or a list of them, got {value!r}")
    out: set[Op] = set()
    for item in items:
        try:
            out.add(Op(item))
        except ValueError:
            raise RuleError(key, f"unknown op {item!r} (one of: "
                            f"{', '.join(o.value for o in Op)})") from None
    return frozenset(out)


def _errno(key: str, value: Any) -> int:
    return errno_value(value, key)


Parser = Callable[[str, Any], Any]

#: Keys every rule may have: key -> (parser, Rule field).
COMMON_KEYS: dict[str, tuple[Parser, str]] = {
    "name": (_string, "name"),
    "op": (_op, "op"),
    "start": (_size, "start"),
    "end": (_size, "end"),
    "nth": (_integer, "nth"),
    "every": (_integer, "every"),
    "probability": (parse_probability, "probability"),
    "state": (_integer, "state"),
    "after": (parse_seconds, "after"),
    "before": (parse_seconds, "before"),
    "once": (parse_boolean, "once"),
    "new-state": (_integer, "new_state"),
}
#: Keys of each action: action -> key -> (parser, action field).
ACTION_KEYS: dict[str, dict[str, tuple[Parser, str]]] = {
    "error": {"errno": (_errno, "errno")},
    "delay": {"seconds": (parse_seconds, "seconds")},
    "corrupt": {"bits": (_integer, "bits")},
    "torn": {"sectors": (_integer, "sectors"), "unit": (_size, "unit"),
             "ack": (parse_boolean, "ack"), "errno": (_errno, "errno")},
    "drop": {},
    "lying-flush": {},
    "gone": {"errno": (_errno, "errno")},
    "set-state": {},
}
#: Action keys without a default.
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {"delay": ("seconds",)}
ALL_KEYS = sorted({"action", *COMMON_KEYS} | {k for keys in ACTION_KEYS.values() for k in keys})


def _unknown(key: str) -> RuleError:
    close = difflib.get_close_matches(key, ALL_KEYS, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(ALL_KEYS)}"
    return RuleError(key, f"unknown key ({hint})")


def _label(index: int, table: Any) -> str:
    name = table.get("name") if isinstance(table, Mapping) else None
    return f"rule {index} ({name!r})" if isinstance(name, str) and name else f"rule {index}"


# ------------------------------------------------------------------------------------ rules
def rule_from_dict(table: Mapping[str, Any], index: int = 0) -> Rule:
    """One rule table -> :class:`Rule`; any mistake is a ConfigError naming rule and key."""
    try:
        return _build(table)
    except RuleError as e:
        raise ConfigError(f"{_label(index, table)}: {e}") from None


def _build(table: Mapping[str, Any]) -> Rule:
    if not isinstance(table, Mapping):
        raise RuleError("rule", f"expected a table of keys, got {table!r}")
    for key in table:
        if not isinstance(key, str) or key not in ALL_KEYS:
            raise _unknown(str(key))
    if "action" not in table:
        raise RuleError("action", f"missing (one of: {', '.join(ACTIONS)})")
    kind = table["action"]
    if kind not in ACTIONS:
        raise RuleError("action", f"unknown action {kind!r} (one of: {', '.join(ACTIONS)})")
    own = ACTION_KEYS[kind]
    rule_kwargs: dict[str, Any] = {}
    action_kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key == "action":
            continue
        if key in COMMON_KEYS:
            parser, field = COMMON_KEYS[key]
            rule_kwargs[field] = parser(key, value)
        elif key in own:
            parser, field = own[key]
            action_kwargs[field] = parser(key, value)
        else:
            owners = [a for a, keys in ACTION_KEYS.items() if key in keys]
            raise RuleError(key, f"does not apply to action {kind!r} "
                            f"(it belongs to: {', '.join(owners)})")
    for key in REQUIRED_KEYS.get(kind, ()):
        if key not in table:
            raise RuleError(key, f"missing (action {kind!r} needs it)")
    action: Action = ACTIONS[kind](**action_kwargs)
    return Rule(action, **rule_kwargs)


def dump_rule(rule: Rule) -> dict[str, Any]:
    """The rule as a table of the file schema (``rule_from_dict(dump_rule(r)) == r``)."""
    out: dict[str, Any] = {"name": rule.name, "action": rule.action.kind,
                           "op": sorted(op.value for op in rule.ops)}
    for key, (_, field) in COMMON_KEYS.items():
        if key in ("name", "op"):
            continue
        value = getattr(rule, field)
        if value is not None and not (key == "probability" and value == 1) and not (
                key == "once" and not value):
            out[key] = value
    for key, (_, field) in ACTION_KEYS[rule.action.kind].items():
        value = getattr(rule.action, field)
        out[key] = errno_name(value) if key == "errno" else value
    if not rule.name:
        del out["name"]
    return out


def rules_from_data(data: Any, source: str = "") -> list[Rule]:
    """``{"rules": [...]}`` or ``[...]`` (parsed TOML/JSON) -> rules."""
    prefix = f"{source}: " if source else ""
    if isinstance(data, Mapping):
        extra = sorted(set(data) - {"rules"})
        if extra:
            raise ConfigError(f"{prefix}unknown top-level key {extra[0]!r} (a rule file holds "
                              "only 'rules', a list of rule tables)")
        data = data.get("rules", [])
    if not isinstance(data, list):
        raise ConfigError(f"{prefix}'rules' must be a list of rule tables, got {data!r}")
    out: list[Rule] = []
    names: set[str] = set()
    for index, table in enumerate(data):
        try:
            rule = rule_from_dict(table, index)
        except ConfigError as e:
            raise ConfigError(f"{prefix}{e}") from None
        if not rule.name:
            rule = rule.with_name(f"rule-{index}")
        if rule.name in names:
            raise ConfigError(f"{prefix}{_label(index, table)}: 'name': {rule.name!r} is "
                              "already the name of an earlier rule")
        names.add(rule.name)
        out.append(rule)
    return out


def load_rules(path: str | Path) -> list[Rule]:
    """Rules from a ``.toml`` or ``.json`` file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the rule file: {e.strerror}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(raw.decode("utf-8"))
        elif suffix == ".json":
            data = json.loads(raw)
        else:
            raise ConfigError(f"{path}: unknown rule file type {suffix or '(none)'!r} "
                              "(use .toml or .json)")
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: bad TOML: {e}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: bad JSON: {e.msg} at line {e.lineno}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return rules_from_data(data, str(path))


def rules_from_flat(flat: Mapping[str, Any], source: str = "rules") -> list[Rule]:
    """Flattened options (``{"0.action": "error", "0.op.0": "read"}``, prefix stripped) -> rules."""
    tables: dict[int, dict[str, Any]] = {}
    lists: dict[tuple[int, str], dict[int, Any]] = {}
    for full, value in flat.items():
        head, _, rest = full.partition(".")
        if not head.isdigit() or not rest:
            raise ConfigError(f"'{source}.{full}': expected {source}.N.KEY (N = 0, 1, ...)")
        index = int(head)
        key, _, item = rest.partition(".")
        if item:
            if not item.isdigit():
                raise ConfigError(f"'{source}.{full}': expected {source}.{index}.{key}.N")
            lists.setdefault((index, key), {})[int(item)] = value
            tables.setdefault(index, {})
        else:
            tables.setdefault(index, {})[key] = value
    for (index, key), items in lists.items():
        if key in tables[index]:
            raise ConfigError(f"'{source}.{index}.{key}' is given both as a value and a list")
        tables[index][key] = [items[i] for i in sorted(items)]
    for want, index in enumerate(sorted(tables)):
        if index != want:
            raise ConfigError(f"'{source}.{want}' is missing (rules are numbered 0, 1, 2, ...)")
    return rules_from_data([tables[i] for i in sorted(tables)])
