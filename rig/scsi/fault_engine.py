"""Matching SCSI-layer fault rules against commands, with the block layer's engine's rules of
play: each rule's :class:`~rig.faults.trigger.Trigger` (hit counts, ``nth``/``every``, the
counter-based seeded draw, so a rule's draws depend only on seed, name and count; ``state``, the
time window, ``once``), one integer state, the clock, and the event log.

Given the block layer's :class:`~rig.faults.engine.FaultEngine` (``shared``), the SCSI rules use
its state, seed, clock and log: a ``faults`` filter rule can arm a SCSI rule with ``new-state``
and the reverse, and one log shows both layers' firings in order (SCSI events have the op
``scsi-XX``, the opcode in hex, with the command's LBA and block count as offset and length).

Order, as in the block layer: every passing non-terminal rule (``delay``, ``set-state``) fires;
the first passing terminal rule in rule order decides the command.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from rig.core.clock import Clock, RealClock
from rig.faults.engine import FaultEngine
from rig.faults.log import Event, FaultEventLog
from rig.faults.trigger import Armed
from rig.scsi.fault_rules import (
    UNBOUNDED_LBA,
    CheckCondition,
    Latency,
    ScsiAction,
    ScsiRule,
    Transport,
)
from rig.scsi.sense import decode_sense, fixed_sense
from rig.scsi.status import CHECK_CONDITION, GOOD, kernel_errno


@dataclass(frozen=True)
class ScsiVerdict:
    """The terminal action that fired (None: the command goes to the device as it is), the rule
    and the LBA the answer is about."""

    action: ScsiAction | None = None
    rule: str = ""
    lba: int | None = None


PASS = ScsiVerdict()


def command_blocks(cdb: bytes) -> tuple[int, int] | None:
    """(LBA, blocks) of a CDB that addresses blocks; blocks 0 means "to the end" for
    SYNCHRONIZE CACHE and 256 for READ/WRITE(6). None for commands without an LBA."""
    if not cdb:
        return None
    op = cdb[0]
    if op in (0x08, 0x0A) and len(cdb) >= 6:
        return ((cdb[1] & 0x1F) << 16) | (cdb[2] << 8) | cdb[3], cdb[4] or 256
    if op in (0x28, 0x2A, 0x2E, 0x2F, 0x35, 0x41) and len(cdb) >= 10:
        lba, = struct.unpack_from(">I", cdb, 2)
        blocks, = struct.unpack_from(">H", cdb, 7)
        return lba, blocks
    if op in (0xA8, 0xAA, 0xAF) and len(cdb) >= 12:
        lba, blocks = struct.unpack_from(">II", cdb, 2)
        return lba, blocks
    if op in (0x88, 0x8A, 0x8E, 0x8F, 0x91, 0x93) and len(cdb) >= 16:
        lba, blocks = struct.unpack_from(">QI", cdb, 2)
        return lba, blocks
    return None


def outcome_errno(action: ScsiAction) -> int:
    """The errno the kernel gives a block request that ends with this answer (0: none)."""
    if isinstance(action, CheckCondition):
        sense = decode_sense(fixed_sense(action.key, action.asc, action.ascq))
        return kernel_errno(CHECK_CONDITION, 0, sense)
    if isinstance(action, Transport):
        return kernel_errno(GOOD, action.host, None)
    return 0


class _Armed(Armed):
    __slots__ = ("rule",)

    def __init__(self, rule: ScsiRule) -> None:
        super().__init__()
        self.rule = rule


class ScsiFaultEngine:
    """SCSI rules, their counters and the command sequence number."""

    def __init__(self, rules: Iterable[ScsiRule] = (), *, seed: int = 0,
                 clock: Clock | None = None, log: FaultEventLog | None = None,
                 shared: FaultEngine | None = None) -> None:
        self.shared = shared
        self.seed = shared.seed if shared is not None else seed
        self.clock: Clock = (shared.clock if shared is not None
                             else clock if clock is not None else RealClock())
        self.log = shared.log if shared is not None else log if log is not None else FaultEventLog(
            self.seed)
        self._t0 = self.clock.monotonic() - (shared.elapsed() if shared is not None else 0.0)
        self._state = 1
        self._lock = threading.Lock()
        self._rules = [_Armed(rule) for rule in rules]
        self.seq = 0

    def join(self, shared: FaultEngine) -> None:
        """Share ``shared``'s state, seed, clock and event log from now on (the block layer's
        ``faults`` filter of the same graph: :func:`rig.filters.faults.find_faults`)."""
        with self._lock:
            self.shared = shared
            self.seed = shared.seed
            self.clock = shared.clock
            self.log = shared.log
            self._t0 = self.clock.monotonic() - shared.elapsed()

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> int:
        return self.shared.state if self.shared is not None else self._state

    @state.setter
    def state(self, value: int) -> None:
        if self.shared is not None:
            self.shared.state = value
        else:
            self._state = value

    def elapsed(self) -> float:
        return self.clock.monotonic() - self._t0

    def counters(self) -> dict[str, int]:
        """``{rule name: times fired}``."""
        return {rec.rule.name: rec.fired for rec in self._rules}

    def hits(self) -> dict[str, int]:
        return {rec.rule.name: rec.hits for rec in self._rules}

    # ------------------------------------------------------------------ matching
    def decide(self, cdb: bytes) -> ScsiVerdict:
        """The verdict for one command; logs and counts what fires; sleeps its delays."""
        if not self._rules:
            return PASS
        blocks = command_blocks(cdb)
        opcode = cdb[0] if cdb else -1
        with self._lock:
            self.seq += 1
            state, now = self.state, self.elapsed()
            passing = [rec for rec in self._rules if self._matches(rec, opcode, blocks)
                       and rec.rule.passes(rec, state, now, self.seed)]
            verdict, delay = self._fire(passing, opcode, blocks)
        if delay:
            self.clock.sleep(delay)
        return verdict

    @staticmethod
    def _matches(rec: _Armed, opcode: int, blocks: tuple[int, int] | None) -> bool:
        """The rule's own predicates: enabled, opcode, LBA range (then its trigger decides)."""
        rule = rec.rule
        if not rec.enabled or (rule.opcodes and opcode not in rule.opcodes):
            return False
        if rule.ranged:
            if blocks is None:
                return False
            lba, count = blocks
            end = UNBOUNDED_LBA if count == 0 else lba + count
            start_r, end_r = rule.span
            if end <= start_r or lba >= end_r:
                return False
        return True

    def _fire(self, passing: list[_Armed], opcode: int,
              blocks: tuple[int, int] | None) -> tuple[ScsiVerdict, float]:
        verdict = PASS
        delay = 0.0
        now = self.elapsed()
        lba, count = blocks if blocks is not None else (0, 0)
        for rec in passing:
            rule = rec.rule
            action = rule.action
            if action.terminal:
                if verdict.action is not None:
                    continue
                first = max(lba, rule.span[0]) if rule.ranged else lba
                verdict = ScsiVerdict(action, rule.name, first if blocks is not None else None)
            if isinstance(action, Latency):
                delay += action.seconds
            rec.fired += 1
            if rule.new_state is not None:
                self.state = rule.new_state
            self.log.append(Event(self.seq, now, f"scsi-{opcode & 0xFF:02x}", lba, count,
                                  rule.name, action.kind, errno=outcome_errno(action),
                                  delay=getattr(action, "seconds", 0.0), state=rule.new_state))
            if rule.once:
                rec.enabled = False
        return verdict, delay
