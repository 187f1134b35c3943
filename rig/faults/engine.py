"""The rule engine: which rules fire on a request, with counters, state and live arm/disarm.

Matching order (documented in docs/filters/faults.md):

1. If the device is gone (a ``gone`` rule fired), the request fails with that errno.
2. The candidates are the enabled rules for the request's op that have no range, plus those whose
   range overlaps the request (from the :class:`~rig.faults.index.RangeIndex`), in rule order
   (the order they were added; ``add_rule(..., first=True)`` puts a rule before all others).
3. For each candidate, its :class:`~rig.faults.trigger.Trigger` (:meth:`~Trigger.passes`):
   ``state`` (compared with the state *before* this request), the time window, then its hit count
   goes up, then ``nth``/``every``, then the seeded ``probability`` draw. None of these depends on
   the other candidates, so they are checked in index order and only the candidates passing all
   of them are put in rule order.
4. In rule order: ``delay`` and ``set-state`` are non-terminal, they all fire. The first
   terminal rule (error, corrupt, torn, drop, lying-flush, gone) fires and decides the request;
   later terminal rules do not fire (their hit count still counts the request).
5. Every firing is logged, counted; ``new-state`` is applied (the last one wins), ``once``
   rules are disarmed. Delays are summed and slept after the lock is released.

Draws are counter-based (:func:`~rig.faults.trigger.draw`: ``hash(seed, rule name, hit count)``),
so a rule's draws do not depend on other rules or on thread interleaving. The engine is
thread-safe (one lock). The SCSI rules' engine (:mod:`rig.scsi.fault_engine`) plays by the same
trigger and can share this engine's state, seed, clock and log.
"""

from __future__ import annotations

import random
import threading
from bisect import insort
from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import Any

from rig.core.clock import Clock as Clock
from rig.core.clock import RealClock as RealClock
from rig.errors import ConfigError
from rig.faults.index import RangeIndex
from rig.faults.log import Event, FaultEventLog
from rig.faults.rules import (
    ALL_OPS,
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
from rig.faults.trigger import Armed
from rig.faults.trigger import draw as draw
from rig.faults.verdict import CORRUPT, DROP, FAIL, LIE, PASS, TORN, Verdict


def corrupt_bits(seed: int, name: str, count: int, lo: int, hi: int, n: int) -> tuple[int, ...]:
    """``n`` distinct bit offsets (absolute, sorted) in the bytes ``[lo, hi)``."""
    if hi <= lo:
        return ()
    rng = random.Random(f"{seed}/{name}/{count}/bits")
    return tuple(sorted(rng.sample(range(lo * 8, hi * 8), min(n, (hi - lo) * 8))))


class _Armed(Armed):
    """A rule in the engine: its counters, and its place in rule order."""

    __slots__ = ("name", "priority", "rule", "terminal")

    def __init__(self, rule: Rule, priority: int) -> None:
        super().__init__()
        self.rule = rule
        self.name = rule.name
        self.priority = priority
        self.terminal = rule.action.terminal


_priority = attrgetter("priority")


class FaultEngine:
    """Rules, their counters, the state, and the event log. See the module docstring."""

    def __init__(self, rules: Iterable[Rule] = (), *, seed: int = 0, clock: Clock | None = None,
                 log: FaultEventLog | None = None) -> None:
        self.seed = seed
        self.clock: Clock = clock if clock is not None else RealClock()
        self.log = log if log is not None else FaultEventLog(seed)
        self.log.rules_source = self._dump_rules
        self._t0 = self.clock.monotonic()
        self._lock = threading.Lock()
        self._rules: dict[str, _Armed] = {}
        # Keyed by the op's plain string: StrEnum members hash through Python code (slow).
        self._unranged: dict[str, list[_Armed]] = {op.value: [] for op in Op}
        self._ranged: dict[str, RangeIndex[_Armed]] = {op.value: RangeIndex() for op in Op}
        self._last = 0
        self._first = 0
        self._auto = 0
        self._state = 1
        self._gone: int | None = None
        self._gone_rule = ""
        self.armed: frozenset[str] = frozenset()
        """Ops with at least one enabled rule (every op once gone): a plain attribute, read
        without the lock on every request, replaced whole when rules change."""
        for rule in rules:
            self.add_rule(rule)

    # ------------------------------------------------------------------ properties
    @property
    def gone(self) -> int | None:
        return self._gone

    @property
    def state(self) -> int:
        return self._state

    @state.setter
    def state(self, value: int) -> None:
        with self._lock:
            self._state = value

    def elapsed(self) -> float:
        """Seconds since the engine was made (the time rules' ``after``/``before`` see)."""
        return self.clock.monotonic() - self._t0

    # ------------------------------------------------------------------ live control
    def add_rule(self, rule: Rule, *, first: bool = False) -> str:
        """Arm ``rule`` (last in order, or first); returns its name (``rule-N`` if unnamed)."""
        if not isinstance(rule, Rule):
            raise ConfigError(f"add_rule expects a Rule, got {rule!r}")
        with self._lock:
            if not rule.name:
                while f"rule-{self._auto}" in self._rules:
                    self._auto += 1
                rule = rule.with_name(f"rule-{self._auto}")
                self._auto += 1
            if rule.name in self._rules:
                raise ConfigError(f"a rule named {rule.name!r} already exists")
            if first:
                self._first -= 1
                priority = self._first
            else:
                self._last += 1
                priority = self._last
            rec = _Armed(rule, priority)
            self._rules[rule.name] = rec
            self._arm(rec)
            return rule.name

    def remove_rule(self, name: str) -> Rule:
        with self._lock:
            rec = self._get(name)
            self._disarm(rec)
            del self._rules[name]
            return rec.rule

    def enable(self, name: str) -> None:
        """Re-arm a disabled (or ``once``-spent) rule; its counters are kept."""
        with self._lock:
            rec = self._get(name)
            if not rec.enabled:
                self._arm(rec)

    def disable(self, name: str) -> None:
        with self._lock:
            self._disarm(self._get(name))

    def reset_counters(self, name: str | None = None) -> None:
        """Zero the hit and fire counts (of one rule, or all): ``nth`` counts afresh."""
        with self._lock:
            for rec in [self._get(name)] if name is not None else self._rules.values():
                rec.hits = rec.fired = 0

    def revive(self) -> None:
        """Bring a ``gone`` device back (as if it was plugged in again)."""
        with self._lock:
            self._gone = None
            self._rearm()

    def rules(self) -> list[Rule]:
        """Every rule (enabled or not), in matching order."""
        with self._lock:
            return [rec.rule for rec in sorted(self._rules.values(), key=_priority)]

    def enabled(self, name: str) -> bool:
        with self._lock:
            return self._get(name).enabled

    def counters(self) -> dict[str, int]:
        """``{name: times fired}`` for every rule."""
        with self._lock:
            return {rec.name: rec.fired for rec in sorted(self._rules.values(), key=_priority)}

    def hits(self) -> dict[str, int]:
        """``{name: requests that matched its op/range/state/time predicates}``."""
        with self._lock:
            return {rec.name: rec.hits for rec in sorted(self._rules.values(), key=_priority)}

    def close(self) -> None:
        self.log.close()

    def _get(self, name: str) -> _Armed:
        rec = self._rules.get(name)
        if rec is None:
            raise ConfigError(f"no rule named {name!r} (rules: {', '.join(self._rules) or 'none'})")
        return rec

    def _arm(self, rec: _Armed) -> None:
        rec.enabled = True
        rule = rec.rule
        for op in rule.ops:
            if rule.ranged:
                start, end = rule.span
                self._ranged[op.value].add(start, end, rec)
            else:
                insort(self._unranged[op.value], rec, key=_priority)
        self._rearm()

    def _disarm(self, rec: _Armed) -> None:
        if not rec.enabled:
            return
        rec.enabled = False
        rule = rec.rule
        for op in rule.ops:
            if rule.ranged:
                start, end = rule.span
                self._ranged[op.value].remove(start, end, rec)
            else:
                self._unranged[op.value].remove(rec)
        self._rearm()

    def _rearm(self) -> None:
        if self._gone is not None:
            self.armed = frozenset(op.value for op in ALL_OPS)
            return
        self.armed = frozenset(op for op, rules in self._unranged.items()
                               if rules or self._ranged[op].count)

    def _dump_rules(self) -> list[dict[str, Any]]:
        from rig.faults.load import dump_rule

        return [dump_rule(rule) for rule in self.rules()]

    # ------------------------------------------------------------------ matching
    def decide(self, seq: int, op: str, offset: int, length: int) -> Verdict:
        """Match request number ``seq`` (``op`` is an :class:`Op` value); log and count what
        fires; sleep its delays (outside the lock)."""
        with self._lock:
            if self._gone is not None:
                self.log.append(Event(seq, self.elapsed(), op, offset, length,
                                      self._gone_rule, Gone.kind, errno=self._gone))
                return Verdict(FAIL, self._gone)
            unranged = self._unranged[op]
            hits: Sequence[_Armed] = ()
            if length:
                index = self._ranged[op]
                if index.count:
                    hits = index.overlapping(offset, offset + length)
            if not unranged and not hits:
                return PASS
            now = self.elapsed()
            passing = self._passing(unranged, now) + self._passing(hits, now)
            if not passing:
                return PASS
            verdict, delay = self._fire(self._winners(passing), seq, op, offset, length)
        if delay:
            self.clock.sleep(delay)
        return verdict

    def _passing(self, candidates: Sequence[_Armed], now: float) -> list[_Armed]:
        """The candidates whose triggers pass (counting hits on the way), in any order: hit
        counts and draws do not depend on the order, so only the few that pass are sorted."""
        state = self._state
        seed = self.seed
        return [rec for rec in candidates if rec.rule.passes(rec, state, now, seed)]

    @staticmethod
    def _winners(passing: list[_Armed]) -> list[_Armed]:
        """In rule order: every non-terminal rule, and the first terminal one."""
        if len(passing) > 1:
            passing.sort(key=_priority)
        fired: list[_Armed] = []
        terminal = False
        for rec in passing:
            if rec.terminal:
                if terminal:
                    continue
                terminal = True
            fired.append(rec)
        return fired

    def _fire(self, fired: list[_Armed], seq: int, op: str, offset: int,
              length: int) -> tuple[Verdict, float]:
        now = self.elapsed()
        verdict = PASS
        delay = 0.0
        for rec in fired:
            rule = rec.rule
            action = rule.action
            rec.fired += 1
            errno = 0
            bits: tuple[int, ...] = ()
            landed: int | None = None
            if isinstance(action, Error):
                errno = action.code
                verdict = Verdict(FAIL, errno)
            elif isinstance(action, Delay):
                delay += action.seconds
            elif isinstance(action, Corrupt):
                start, end = rule.span
                bits = corrupt_bits(self.seed, rec.name, rec.fired, max(start, offset),
                                    min(end, offset + length), action.bits)
                verdict = Verdict(CORRUPT, bits=bits)
            elif isinstance(action, Torn):
                landed = action.landed(offset, length)
                errno = 0 if action.ack else action.code
                verdict = Verdict(TORN, errno, landed=landed)
            elif isinstance(action, Drop):
                verdict = Verdict(DROP)
            elif isinstance(action, LyingFlush):
                verdict = Verdict(LIE)
            elif isinstance(action, Gone):
                errno = action.code
                self._gone = errno
                self._gone_rule = rec.name
                verdict = Verdict(FAIL, errno)
            else:
                assert isinstance(action, SetState)
            if rule.new_state is not None:
                self._state = rule.new_state
            self.log.append(Event(seq, now, op, offset, length, rec.name, action.kind,
                                  errno=errno, delay=getattr(action, "seconds", 0.0), bits=bits,
                                  landed=landed, state=rule.new_state))
            if rule.once:
                self._disarm(rec)
        self._rearm()
        return verdict, delay
