"""Replay a saved event log: the same faults at the same request numbers, no rules needed.

``Replayer(log)`` is a rule source for the ``faults`` filter (``FaultsFilter(source=...)`` or the
graph option ``"replay": "run.jsonl"``). Request ``seq`` gets exactly the faults the log recorded
for ``seq``: the same errno, the same flipped bits, the same torn prefix, the same delay; after a
recorded ``gone`` every later request fails as it did. Its own :attr:`log` records the replay, so
``[e.outcome() for e in replayer.log] == [e.outcome() for e in recorded]`` is the check that
the failures were reproduced.

With ``strict=True`` (the default) a request whose op, offset or length differ from the recorded
one raises :class:`ReplayDivergence`: the workload is not the one that was recorded, and the same
numbers would not mean the same failures. Replay is exact for a sequential workload (queue depth
1): with parallel requests the numbering itself depends on scheduling.
"""

from __future__ import annotations

import threading
from pathlib import Path

from rig.errors import ConfigError, RigError
from rig.faults.engine import Clock, RealClock
from rig.faults.log import Event, FaultEventLog
from rig.faults.rules import ALL_OPS
from rig.faults.verdict import CORRUPT, DROP, FAIL, LIE, PASS, TORN, Verdict

_BLOCK_OPS = frozenset(op.value for op in ALL_OPS)


class ReplayDivergence(RigError):
    """The replayed workload sent a different request than the recorded one at some ``seq``."""


class Replayer:
    """A rule source that fires the faults of a recorded log. See the module docstring."""

    def __init__(self, recorded: FaultEventLog | str | Path, *, clock: Clock | None = None,
                 strict: bool = True) -> None:
        self.recorded = (recorded if isinstance(recorded, FaultEventLog)
                         else FaultEventLog.load(recorded))
        self.seed = self.recorded.seed
        self.clock: Clock = clock if clock is not None else RealClock()
        self.strict = strict
        self.log = FaultEventLog(self.seed, self.recorded.rules)
        self._t0 = self.clock.monotonic()
        self._by_seq = self.recorded.by_seq()
        self._lock = threading.Lock()
        self._gone: Event | None = None
        self._counts: dict[str, int] = {}
        where = str(recorded) if not isinstance(recorded, FaultEventLog) else "the fault log"
        for n, event in enumerate(self.recorded, 1):
            if event.op not in _BLOCK_OPS:
                raise ConfigError(f"{where}: event {n} (request {event.seq}): op {event.op!r} "
                                  "cannot be replayed by the faults filter (SCSI-layer events "
                                  "are not replayed)")
            self._counts.setdefault(event.rule, 0)
        recorded_ops = {e.op for e in self.recorded}
        self.armed: frozenset[str] = frozenset(recorded_ops)
        self.state = 1

    @property
    def gone(self) -> int | None:
        return None if self._gone is None else self._gone.errno

    def counters(self) -> dict[str, int]:
        """``{rule: times it fired in this replay}``."""
        with self._lock:
            return dict(self._counts)

    def close(self) -> None:
        self.log.close()

    def decide(self, seq: int, op: str, offset: int, length: int) -> Verdict:
        events = self._by_seq.get(seq)
        with self._lock:
            if events is not None and self.strict:
                want = events[0]
                if (want.op, want.offset, want.length) != (op, offset, length):
                    raise ReplayDivergence(
                        f"request {seq}: recorded {want.op} {want.offset}+{want.length}, "
                        f"replayed {op} {offset}+{length}")
            now = self.clock.monotonic() - self._t0
            if self._gone is not None:
                g = self._gone
                self.log.append(Event(seq, now, op, offset, length, g.rule, g.action,
                                      errno=g.errno))
                return Verdict(FAIL, g.errno)
            if events is None:
                return PASS
            verdict = PASS
            delay = 0.0
            for ev in events:
                self.log.append(Event(seq, now, op, offset, length, ev.rule, ev.action,
                                      ev.errno, ev.delay, ev.bits, ev.landed, ev.state))
                self._counts[ev.rule] = self._counts.get(ev.rule, 0) + 1
                delay += ev.delay
                if ev.state is not None:
                    self.state = ev.state
                verdict = _verdict(ev, verdict, offset, length)
                if ev.action == "gone":
                    self._gone = ev
                    self.armed = frozenset(op.value for op in ALL_OPS)
        if delay:
            self.clock.sleep(delay)
        return verdict


def _verdict(ev: Event, current: Verdict, offset: int, length: int) -> Verdict:
    """The verdict a recorded event stands for (non-terminal events keep ``current``), on a
    request at ``offset`` of ``length`` bytes: flipped bits and a torn prefix stay inside it
    (they always do when the request is the recorded one; ``strict=False`` may give another)."""
    action = ev.action
    if action in ("error", "gone"):
        return Verdict(FAIL, ev.errno)
    if action == "corrupt":
        lo, hi = offset * 8, (offset + length) * 8
        return Verdict(CORRUPT, bits=tuple(b for b in ev.bits if lo <= b < hi))
    if action == "torn":
        return Verdict(TORN, ev.errno, landed=min(ev.landed or 0, length))
    if action == "drop":
        return Verdict(DROP)
    if action == "lying-flush":
        return Verdict(LIE)
    return current
