"""The Trigger both rule engines share: one validation, one parser, one matcher (issue 17 part 3).

The block rules (rig.faults.rules.Rule) and the SCSI rules (rig.scsi.fault_rules.ScsiRule) are
Triggers, so a mistake in a trigger key reads the same in either layer, and both count, draw and
change state the same way.
"""

from __future__ import annotations

from typing import Any

import pytest

from rig.errors import ConfigError
from rig.faults.engine import FaultEngine
from rig.faults.load import rule_from_dict
from rig.faults.rules import Error, Rule, SetState
from rig.faults.trigger import TRIGGER_KEYS, Armed, RuleError, Trigger, draw, trigger_fields
from rig.scsi import cdb
from rig.scsi.fault_engine import ScsiFaultEngine
from rig.scsi.fault_rules import Latency, ScsiRule, StateOnly, scsi_rule_from_dict
from rig.testing.clock import VirtualClock


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"nth": 0}, "nth"), ({"every": 0}, "every"), ({"nth": 1, "every": 2}, "every"),
    ({"probability": 1.5}, "probability"), ({"state": -1}, "state"),
    ({"new_state": -1}, "new-state"), ({"after": -1.0}, "after"),
    ({"after": 2.0, "before": 1.0}, "before"), ({"once": 1}, "once"),
    ({"name": 7}, "name"), ({"name": "\udc80"}, "name"),
])
def test_one_mistake_one_message_in_every_layer(kwargs: dict[str, Any], key: str) -> None:
    messages = set()
    for make in (lambda: Trigger(**kwargs), lambda: Rule(Error(), **kwargs),
                 lambda: ScsiRule(Latency(0.0), **kwargs)):
        with pytest.raises(RuleError) as exc:
            make()
        assert exc.value.key == key
        assert isinstance(exc.value, ConfigError)
        messages.add(str(exc.value))
    assert len(messages) == 1, messages


def test_set_state_needs_a_new_state_in_both_layers() -> None:
    for make in (lambda: Rule(SetState()), lambda: ScsiRule(StateOnly())):
        with pytest.raises(RuleError, match=r"^'new-state': action 'set-state' needs"):
            make()


def test_every_field_but_the_action_is_a_keyword() -> None:
    with pytest.raises(TypeError):
        Rule(Error(), "name")  # type: ignore[misc]
    with pytest.raises(TypeError):
        ScsiRule(Latency(0.0), "name")  # type: ignore[misc]


_TABLE = {"name": "t", "nth": "2", "probability": "50%", "state": 1, "after": "10ms",
          "before": 5, "once": "on", "new-state": "3"}


def test_both_loaders_parse_the_trigger_keys_alike() -> None:
    want = {"name": "t", "nth": 2, "probability": 0.5, "state": 1, "after": 0.01, "before": 5.0,
            "once": True, "new_state": 3}
    assert trigger_fields(_TABLE) == want
    block = rule_from_dict({"action": "error", **_TABLE})
    scsi = scsi_rule_from_dict({"action": "delay", **_TABLE})
    for rule in (block, scsi):
        assert {field: getattr(rule, field) for _, field in TRIGGER_KEYS.values()} == {
            "every": None, **want}


@pytest.mark.parametrize(("key", "value"), [
    ("nth", "--5"), ("every", 2**63), ("probability", "150%"), ("state", "x"),
    ("after", "1e300"), ("once", "sometimes"), ("new-state", -1), ("name", ["x"]),
])
def test_a_bad_trigger_value_reads_the_same_in_both_files(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as block:
        rule_from_dict({"action": "error", key: value})
    with pytest.raises(ConfigError) as scsi:
        scsi_rule_from_dict({"action": "delay", key: value})
    assert str(block.value).split(": ", 1)[1] == str(scsi.value).split(": ", 1)[1]


def test_passes_checks_state_and_window_before_counting() -> None:
    trigger = Trigger(name="t", state=2, after=1.0, before=2.0, nth=2)
    armed = Armed()
    assert not trigger.passes(armed, 1, 1.5, 0)       # wrong state: not counted
    assert not trigger.passes(armed, 2, 0.5, 0)       # before the window: not counted
    assert not trigger.passes(armed, 2, 2.0, 0)       # the window is [after, before)
    assert armed.hits == 0
    assert not trigger.passes(armed, 2, 1.0, 0)       # counted: 1st
    assert trigger.passes(armed, 2, 1.5, 0)           # 2nd: fires
    assert not trigger.passes(armed, 2, 1.5, 0)       # 3rd
    assert armed.hits == 3


def test_passes_every_and_probability_use_the_count() -> None:
    every = Trigger(every=3)
    armed = Armed()
    assert [every.passes(armed, 1, 0.0, 0) for _ in range(7)] == [
        False, False, True, False, False, True, False]
    flaky = Trigger(name="flaky", probability=0.5)
    armed = Armed()
    got = [flaky.passes(armed, 1, 0.0, 9) for _ in range(64)]
    assert got == [draw(9, "flaky", n) < 0.5 for n in range(1, 65)]


def test_block_and_scsi_rules_fire_on_the_same_counts_and_draws() -> None:
    """The same trigger in both engines: the same firings for the same seed."""
    trigger = {"name": "p", "probability": 0.3, "every": 2}
    clock = VirtualClock()
    block = FaultEngine([Rule(Error(), op="read", **trigger)], seed=4, clock=clock)
    scsi = ScsiFaultEngine([ScsiRule(Latency(0.0), opcodes=frozenset({0x28}), **trigger)],
                           seed=4, clock=clock)
    for seq in range(1, 101):
        block.decide(seq, "read", 0, 512)
        scsi.decide(cdb.read(0, 1, 512).cdb)
    assert block.hits() == scsi.hits() == {"p": 100}
    assert block.counters() == scsi.counters()
    assert [e.seq for e in block.log] == [e.seq for e in scsi.log]
