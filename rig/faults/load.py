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
name) and the key: ``rule 3 ('slow-reads'): 'probability': expected a probability in 0..1, got
1.5``. Values are parsed by :mod:`rig.core.values` and documents read by :mod:`rig.core.documents`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rig.core import values
from rig.core.documents import decode, loads_json, loads_toml, read_document
from rig.errors import ConfigError
from rig.faults.rules import (
    ACTIONS,
    Action,
    Op,
    Rule,
    RuleError,
    errno_name,
)
from rig.faults.trigger import TRIGGER_KEYS, Parser, built, named


# ---------------------------------------------------------------------------- keys
# One parser per kind of value, shared with every other front end: rig.core.values.
def _op(key: str, value: Any) -> frozenset[Op]:
    items: list[Any]
    if isinstance(value, str):
        items = [p.strip() for p in re.split(r"[|,]", value)]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise RuleError(key, f"expected an op name or a list of them, got {values.shown(value)}")
    out: set[Op] = set()
    for item in items:
        if not isinstance(item, str) or item not in Op.__members__.values():
            raise RuleError(key, f"unknown op {values.shown(item)} (one of: "
                            f"{', '.join(o.value for o in Op)})")
        out.add(Op(item))
    return frozenset(out)


#: Keys every rule may have: key -> (parser, Rule field): the requests the rule looks at and its
#: trigger's (rig.faults.trigger). The order (name first) is the order dump_rule writes.
COMMON_KEYS: dict[str, tuple[Parser, str]] = {
    "name": TRIGGER_KEYS["name"],
    "op": (_op, "op"),
    "start": (values.offset, "start"),
    "end": (values.offset, "end"),
    **TRIGGER_KEYS,
}
#: Keys of each action: action -> key -> (parser, action field).
ACTION_KEYS: dict[str, dict[str, tuple[Parser, str]]] = {
    "error": {"errno": (values.errno, "errno")},
    "delay": {"seconds": (values.seconds, "seconds")},
    "corrupt": {"bits": (values.count, "bits")},
    "torn": {"sectors": (values.count, "sectors"), "unit": (values.size, "unit"),
             "ack": (values.boolean, "ack"), "errno": (values.errno, "errno")},
    "drop": {},
    "lying-flush": {},
    "gone": {"errno": (values.errno, "errno")},
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
    return (f"rule {index} ({values.shown(name)})" if isinstance(name, str) and name
            else f"rule {index}")


# ------------------------------------------------------------------------------------ rules
def rule_from_dict(table: Mapping[str, Any], index: int = 0) -> Rule:
    """One rule table -> :class:`Rule`; any mistake is a ConfigError naming rule and key."""
    return built(_build, table, _label(index, table))


def _build(table: Mapping[str, Any]) -> Rule:
    if not isinstance(table, Mapping):
        raise RuleError("rule", f"expected a table of keys, got {values.shown(table)}")
    for key in table:
        if not isinstance(key, str) or key not in ALL_KEYS:
            raise _unknown(str(key)[:80])
    if "action" not in table:
        raise RuleError("action", f"missing (one of: {', '.join(ACTIONS)})")
    kind = table["action"]
    if not isinstance(kind, str) or kind not in ACTIONS:
        raise RuleError("action", f"unknown action {values.shown(kind)} (one of: "
                        f"{', '.join(ACTIONS)})")
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
        extra = sorted(str(key) for key in data if key != "rules")
        if extra:
            raise ConfigError(f"{prefix}unknown top-level key {values.shown(extra[0])} (a rule "
                              "file holds only 'rules', a list of rule tables)")
        data = data.get("rules", [])
    if not isinstance(data, list):
        raise ConfigError(f"{prefix}'rules' must be a list of rule tables, got "
                          f"{values.shown(data)}")
    return named(data, rule_from_dict, source=source, default="rule-{}",
                 taken=lambda index, table, name: f"{_label(index, table)}: 'name': "
                 f"{values.shown(name)} is already the name of an earlier rule")


def load_rules(path: str | Path) -> list[Rule]:
    """Rules from a ``.toml`` or ``.json`` file."""
    return rules_from_data(load_document(path, "rule file"), str(path))


def load_document(path: str | Path, what: str) -> Any:
    """A ``.toml`` or ``.json`` file, parsed with bounds (:mod:`rig.core.documents`): every
    problem, from a missing file to a document nested 1,000 deep, is one ConfigError line."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigError(f"{path}: unknown {what} type {suffix or '(none)'!r} "
                          "(use .toml or .json)")
    text = decode(read_document(path, what), str(path))
    return loads_toml(text, str(path)) if suffix == ".toml" else loads_json(text, str(path))


def _index(text: str) -> int | None:
    """``"3"`` -> 3: ASCII digits only (``"²"`` passes ``isdigit()`` but is no index)."""
    try:
        return values.count("index", text) if text.isascii() and text.isdigit() else None
    except values.BadValue:
        return None


def tables_from_flat(flat: Mapping[str, Any], source: str) -> list[dict[str, Any]]:
    """``{"0.action": "error", "0.op.0": "read"}`` (prefix ``source.`` stripped) ->
    ``[{"action": "error", "op": ["read"]}]``: the tables a list of rules flattens to, for the
    block rules and the SCSI rules alike."""
    tables: dict[int, dict[str, Any]] = {}
    lists: dict[tuple[int, str], dict[int, Any]] = {}
    for full, value in flat.items():
        head, _, rest = full.partition(".")
        index = _index(head)
        if index is None or not rest:
            raise ConfigError(f"'{source}.{values.shown(full)[1:-1]}': expected {source}.N.KEY "
                              "(N = 0, 1, ...)")
        key, _, item = rest.partition(".")
        if item:
            position = _index(item)
            if position is None:
                raise ConfigError(f"'{source}.{values.shown(full)[1:-1]}': expected "
                                  f"{source}.{index}.{key}.N")
            lists.setdefault((index, key), {})[position] = value
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
    return [tables[i] for i in sorted(tables)]


def rules_from_flat(flat: Mapping[str, Any], source: str = "rules") -> list[Rule]:
    """Flattened options (``{"0.action": "error", "0.op.0": "read"}``, prefix stripped) -> rules."""
    return rules_from_data(tables_from_flat(flat, source))
