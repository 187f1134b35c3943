"""The rig's own fault rules: data-defined faults for the ``faults`` filter.

* :mod:`rig.faults.rules`: :class:`Rule` (predicates: op, byte range, nth/every, probability,
  state, time window) and its actions (:class:`Error`, :class:`Delay`, :class:`Corrupt`,
  :class:`Torn`, :class:`Drop`, :class:`LyingFlush`, :class:`Gone`, :class:`SetState`);
* :mod:`rig.faults.index`: the byte-range index that keeps thousands of range rules cheap;
* :mod:`rig.faults.engine`: matching, counters, state, live arm/disarm, the :class:`Clock`;
* :mod:`rig.faults.verdict`: what a rule source tells the filter (:class:`Verdict`);
* :mod:`rig.faults.log`: the event log (JSON lines, with the seed);
* :mod:`rig.faults.fault_replay`: :class:`Replayer`, the same faults at the same requests
  again;
* :mod:`rig.faults.load`: rules from TOML, JSON and flattened graph options (one schema).

The filter itself is :class:`rig.filters.faults.FaultsFilter` (driver ``faults``).
"""

from rig.faults.engine import Clock, FaultEngine, RealClock
from rig.faults.fault_replay import ReplayDivergence, Replayer
from rig.faults.load import dump_rule, load_rules, rule_from_dict, rules_from_data
from rig.faults.log import Event, FaultEventLog
from rig.faults.rules import (
    Corrupt,
    Delay,
    Drop,
    Error,
    Gone,
    LyingFlush,
    Op,
    Rule,
    SetState,
    Torn,
)

__all__ = [
    "Clock", "Corrupt", "Delay", "Drop", "Error", "Event", "FaultEngine", "FaultEventLog", "Gone",
    "LyingFlush", "Op", "RealClock", "ReplayDivergence", "Replayer", "Rule", "SetState", "Torn",
    "dump_rule", "load_rules", "rule_from_dict", "rules_from_data",
]
