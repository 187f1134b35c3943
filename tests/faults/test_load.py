"""The rule schema: TOML, JSON and flattened graph options give the same rules; every bad key or
value is one ConfigError naming the rule (index and name) and the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rig
from rig.core.options import flatten
from rig.errors import ConfigError
from rig.faults.load import (
    ACTION_KEYS,
    dump_rule,
    load_rules,
    rule_from_dict,
    rules_from_data,
    rules_from_flat,
)
from rig.faults.rules import ACTIONS, Delay, Error, Op, Rule

# ------------------------------------------------------------------------------ generators


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for the ASCII text used here
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def to_toml(tables: list[dict[str, Any]]) -> str:
    out = []
    for table in tables:
        out.append("[[rules]]")
        out.extend(f"{key} = {toml_value(value)}" for key, value in table.items())
        out.append("")
    return "\n".join(out)


sizes = st.integers(0, 1 << 30).flatmap(
    lambda n: st.sampled_from([n, str(n)] + ([f"{n >> 10}k"] if n % 1024 == 0 else [])))
seconds = st.one_of(st.floats(0, 100, allow_nan=False), st.integers(0, 100).map(str),
                    st.integers(0, 5000).map(lambda n: f"{n}ms"))


@st.composite
def rule_tables(draw: st.DrawFn, index: int = 0) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(ACTIONS)))
    allowed = sorted(op.value for op in ACTIONS[kind].ops)
    table: dict[str, Any] = {"action": kind}
    if draw(st.booleans()):
        table["name"] = f"r{index}-{kind}"
    ranged = draw(st.booleans()) and allowed != ["flush"]
    if ranged:
        allowed = [op for op in allowed if op != "flush"]
        start = draw(st.integers(0, 1 << 30))
        which = draw(st.sampled_from(["start", "end", "both"]))
        if which != "end":
            table["start"] = draw(st.sampled_from([start, str(start)]))
        if which != "start":
            table["end"] = start + draw(st.integers(1, 1 << 20))
    if draw(st.booleans()):
        ops = draw(st.lists(st.sampled_from(allowed), min_size=1, unique=True))
        table["op"] = draw(st.sampled_from([ops, "|".join(ops)]))
    count = draw(st.sampled_from(["nth", "every", None]))
    if count:
        table[count] = draw(st.integers(1, 100))
    if draw(st.booleans()):
        p = draw(st.integers(0, 100))
        table["probability"] = draw(st.sampled_from([p / 100, f"{p}%"]))
    for key in ("state", "new-state"):
        if draw(st.booleans()) or (key == "new-state" and kind == "set-state"):
            table[key] = draw(st.integers(0, 9))
    if draw(st.booleans()):
        table["after"] = draw(seconds)
    if draw(st.booleans()):
        table["once"] = draw(st.sampled_from([True, False, "on", "off"]))
    for key in ACTION_KEYS[kind]:
        if draw(st.booleans()) or (kind == "delay" and key == "seconds"):
            table[key] = draw({
                "errno": st.sampled_from(["EIO", "ENOSPC", 5, "28", "EROFS"]),
                "seconds": seconds,
                "bits": st.integers(1, 64),
                "sectors": st.integers(0, 16),
                "unit": st.sampled_from([512, 4096, "4k"]),
                "ack": st.booleans(),
            }[key])
    return table


rule_lists = st.integers(1, 6).flatmap(
    lambda n: st.tuples(*(rule_tables(i) for i in range(n)))).map(list)


# ------------------------------------------------------------------------- same rules


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tables=rule_lists)
def test_toml_json_and_graph_options_give_the_same_rules(tmp_path: Path,
                                                         tables: list[dict[str, Any]]) -> None:
    toml_file, json_file = tmp_path / "r.toml", tmp_path / "r.json"
    toml_file.write_text(to_toml(tables))
    json_file.write_text(json.dumps({"rules": tables}))
    from_toml = load_rules(toml_file)
    assert load_rules(json_file) == from_toml
    assert rules_from_data(tables) == from_toml
    flat = {k[len("rules."):]: v for k, v in flatten({"rules": tables}).items()}
    assert rules_from_flat(flat) == from_toml
    # Strings everywhere (the command line's --image-opts form) mean the same.
    as_text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in flat.items()}
    assert rules_from_flat(as_text) == from_toml


@given(tables=rule_lists)
def test_dumped_rules_load_back_equal(tables: list[dict[str, Any]]) -> None:
    rules = rules_from_data(tables)
    assert rules_from_data([dump_rule(r) for r in rules]) == rules
    assert json.loads(json.dumps([dump_rule(r) for r in rules])) == [dump_rule(r) for r in rules]


def test_values_are_parsed_with_their_units() -> None:
    [rule] = rules_from_data([{
        "action": "delay", "op": "read|write", "start": "1M", "end": "1088k",
        "probability": "10%", "seconds": "50ms", "after": "1.5", "once": "on",
    }])
    assert rule == Rule(Delay(0.05), name="rule-0", op=("read", "write"), start=1 << 20,
                        end=1088 << 10, probability=0.1, after=1.5, once=True)
    assert rule.ops == {Op.READ, Op.WRITE}


def test_unnamed_rules_are_named_by_their_index() -> None:
    rules = rules_from_data([{"action": "error", "name": "a"}, {"action": "error"}])
    assert [r.name for r in rules] == ["a", "rule-1"]


# ---------------------------------------------------------------------------- bad input

BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"action": "error", "probability": 1.5}, "probability",
     "expected a probability in 0..1, got 1.5"),
    ({"action": "error", "probability": "150%"}, "probability",
     "expected a percentage in 0..100, got '150'"),
    ({"action": "error", "probability": "often"}, "probability", "expected a probability"),
    ({"action": "error", "probabilty": 0.5}, "probabilty", "did you mean 'probability'?"),
    ({"action": "error", "new_state": 2}, "new_state", "did you mean 'new-state'?"),
    ({"action": "error", "xyzzy": 1}, "xyzzy", "unknown key (known keys: "),
    ({"op": "read"}, "action", "missing (one of: error, delay"),
    ({"action": "explode"}, "action", "unknown action 'explode'"),
    ({"action": "error", "seconds": 1}, "seconds", "does not apply to action 'error' "
                                                   "(it belongs to: delay)"),
    ({"action": "delay"}, "seconds", "missing (action 'delay' needs it)"),
    ({"action": "delay", "seconds": -1}, "seconds", "in 0..1e+06, got -1"),
    ({"action": "delay", "seconds": "soon"}, "seconds", "expected seconds"),
    ({"action": "delay", "seconds": 0.1, "bits": 3}, "bits", "does not apply to action 'delay'"),
    ({"action": "corrupt", "op": "write"}, "op", "acts only on read, not write"),
    ({"action": "error", "op": "reed"}, "op", "unknown op 'reed'"),
    ({"action": "error", "op": 5}, "op", "expected an op name"),
    ({"action": "error", "op": "flush", "start": 0}, "op", "never matches a flush"),
    ({"action": "error", "start": "lots"}, "start", "expected a byte offset"),
    ({"action": "error", "start": -1}, "start", "expected a byte offset"),
    ({"action": "error", "start": 8, "end": 4}, "end", "must be greater than 'start' (8)"),
    ({"action": "error", "nth": 0}, "nth", "must be an integer >= 1"),
    ({"action": "error", "nth": "third"}, "nth", "expected an integer"),
    ({"action": "error", "nth": 2, "every": 2}, "every", "either 'nth' or 'every'"),
    ({"action": "error", "once": "maybe"}, "once", "expected true or false"),
    ({"action": "error", "errno": "EWHAT"}, "errno", "unknown errno name 'EWHAT'"),
    ({"action": "error", "after": 5, "before": 1}, "before", "must be later than 'after'"),
    ({"action": "set-state"}, "new-state", "needs a 'new-state'"),
    ({"action": "torn", "unit": 0}, "unit", "must be an integer >= 1"),
    ({"action": "torn", "ack": "sure"}, "ack", "expected true or false"),
    ({"action": "error", "name": 7}, "name", "expected a string"),
]


@pytest.mark.parametrize(("table", "key", "message"), BAD, ids=[f"{b[1]}-{i}"
                                                                 for i, b in enumerate(BAD)])
def test_each_bad_key_or_value_names_rule_and_key(table: dict[str, Any], key: str,
                                                  message: str) -> None:
    named = {"name": "x", **table} if "name" not in table else table
    with pytest.raises(ConfigError) as exc:
        rule_from_dict(named, 3)
    text = str(exc.value)
    label = "rule 3 ('x')" if isinstance(named["name"], str) else "rule 3"
    assert text.startswith(f"{label}: {key!r}: "), text
    assert message in text, text


def test_the_documented_example_from_a_file(tmp_path: Path) -> None:
    good = {"action": "error", "op": "write"}
    bad = {"name": "slow-reads", "action": "delay", "seconds": 0.05, "probability": 1.5}
    path = tmp_path / "rules.toml"
    path.write_text(to_toml([good, good, good, bad]))
    with pytest.raises(ConfigError) as exc:
        load_rules(path)
    assert str(exc.value) == (f"{path}: rule 3 ('slow-reads'): 'probability': expected a "
                              "probability in 0..1, got 1.5")


def test_graph_options_report_the_same_error() -> None:
    spec = {"driver": "faults", "file": {"driver": "memory", "size": 4096},
            "rules": [{"action": "error"}, {"action": "error", "name": "n", "nth": 0}]}
    with pytest.raises(ConfigError, match=r"^rule 1 \('n'\): 'nth': must be an integer >= 1"):
        rig.open(spec)
    with pytest.raises(ConfigError, match=r"rule 0: 'op': unknown op 'x'"):
        rig.open("driver=faults,file.driver=memory,file.size=4k,rules.0.action=error,"
                 "rules.0.op=x")


@pytest.mark.parametrize(("flat", "message"), [
    ({"0.action": "error", "2.action": "error"}, "'rules.1' is missing"),
    ({"x.action": "error"}, "expected rules.N.KEY"),
    ({"0": "error"}, "expected rules.N.KEY"),
    ({"0.action": "error", "0.op.x": "read"}, "expected rules.0.op.N"),
    ({"0.action": "error", "0.op": "read", "0.op.0": "read"}, "both as a value and a list"),
])
def test_malformed_flattened_rules(flat: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        rules_from_flat(flat)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("r.toml", "[[rules]]\naction = \n", "invalid TOML"),
    ("r.json", "{\"rules\": [", "invalid JSON"),
    ("r.yaml", "rules: []", "unknown rule file type '.yaml'"),
    ("r.json", "{\"rule\": []}", "unknown top-level key 'rule'"),
    ("r.json", "{\"rules\": {}}", "'rules' must be a list"),
    ("r.json", "[5]", "rule 0: 'rule': expected a table of keys"),
    ("r.json", '[{"action": "error", "name": "a"}, {"action": "drop", "name": "a"}]',
     "rule 1 ('a'): 'name': 'a' is already the name of an earlier rule"),
])
def test_bad_rule_files(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_rules(path)
    assert str(exc.value).startswith(f"{path}: ")
    assert message in str(exc.value)


def test_missing_rule_file() -> None:
    with pytest.raises(ConfigError, match="cannot read the rule file"):
        load_rules("/nonexistent/rules.toml")


def test_a_rule_file_is_read_once_at_open(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps([{"action": "error", "op": "read", "errno": "ENOSPC"}]))
    with rig.open({"driver": "faults", "file": {"driver": "memory", "size": 4096},
                   "rules": str(path)}) as blk:
        path.unlink()
        with pytest.raises(OSError) as exc:
            blk.pread(0, 512)
        assert exc.value.errno == 28
    assert rules_from_data([{"action": "error"}]) == [Rule(Error(), name="rule-0")]


# ------------------------------------------------------- issue 18: tracebacks found by fuzzing
@pytest.mark.parametrize(("table", "key"), [
    ({"action": []}, "action"),                      # TypeError: unhashable
    ({"action": "error", "nth": "--5"}, "nth"),      # passed isdigit(), then int() failed
    ({"action": "error", "start": "1" * 5000}, "start"),   # Python's int digit limit
    ({"action": "error", "start": "1" * 400 + ".5k"}, "start"),
    ({"action": "error", "start": "²"}, "start"),    # Unicode digits
    ({"action": "delay", "seconds": 1e300}, "seconds"),    # OverflowError at the first sleep
    ({"action": "delay", "seconds": "1e300"}, "seconds"),
    ({"action": "error", "end": 0}, "end"),          # an empty range: ValueError at open
])
def test_values_that_crashed_are_config_errors(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^rule 0: '{key}': "):
        rule_from_dict(table)


def test_unicode_digits_in_flattened_rule_indexes() -> None:
    with pytest.raises(ConfigError, match=r"'rules\.²\.action': expected rules\.N\.KEY"):
        rules_from_flat({"².action": "error"})
    with pytest.raises(ConfigError, match=r"expected rules\.0\.op\.N"):
        rules_from_flat({"0.action": "error", "0.op.٣": "read"})


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(("name", "text"), [
    ("r.toml", f"rules = {_deep(1000)}\n"),
    ("r.json", f'{{"rules": {_deep(1000)}}}'),
    ("r.toml", "[[rules]]\naction = \"error\"\nstart = " + "1" * 5000 + "\n"),
    ("r.json", '[{"action": "error", "start": ' + "1" * 5000 + "}]"),
    ("r.json", b'[{"action": "error", "name": "\xff"}]'),
])
def test_documents_that_crashed_are_one_line_errors(tmp_path: Path, name: str,
                                                    text: str | bytes) -> None:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(ConfigError) as exc:
        load_rules(path)
    assert str(exc.value).startswith(f"{path}: ") and "\n" not in str(exc.value)


def test_a_json_graph_nested_1000_deep_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nested more than"):
        rig.open('json:{"driver": "faults", "rules": ' + _deep(1000) + "}")
    tree: dict[str, Any] = {}
    inner = tree
    for _ in range(1000):
        inner["a"] = {}
        inner = inner["a"]
    with pytest.raises(ConfigError, match="nested more than"):
        rig.open({"driver": "memory", "size": 4096, "x": tree})


def test_memory_size_the_machine_cannot_hold_is_refused_at_open() -> None:
    with pytest.raises(ConfigError, match="cannot allocate 1E"):
        rig.open("driver=memory,size=1E")
