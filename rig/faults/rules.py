"""Fault rules as data: one frozen :class:`Rule` = predicates (all must match) + one action.

A rule is checked against every request the ``faults`` filter sees (reads, writes, write-zeroes,
discards, flushes, after the chokepoint has validated, aligned and split them). Its own predicates:

* ``op``: the request kinds it applies to (default: every kind its action can act on);
* ``start``/``end``: a byte range ``[start, end)`` that must overlap the request (never matches a
  flush, which has no range);

and those of its :class:`~rig.faults.trigger.Trigger`, shared with the SCSI rules: ``state``
(the filter's integer state, starting at 1 as blkdebug's), ``after``/``before`` (seconds since
the filter opened, on the engine's clock), ``nth``/``every`` (counted among the requests that
match the predicates before them), the seeded ``probability``, ``new_state`` and ``once``.

Actions are small frozen dataclasses (:class:`Error`, :class:`Delay`, :class:`Corrupt`,
:class:`Torn`, :class:`Drop`, :class:`LyingFlush`, :class:`Gone`, :class:`SetState`). Every value
is validated when the rule is built: a mistake is a :class:`~rig.errors.ConfigError` naming the
key, never a surprise at I/O time.
"""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass, field, replace
from enum import StrEnum
from typing import ClassVar

from rig.core import values
from rig.faults.trigger import RuleError as RuleError
from rig.faults.trigger import Trigger, check_int, check_seconds


class Op(StrEnum):
    """The request kinds a rule can match."""

    READ = "read"
    WRITE = "write"
    ZERO = "zero"
    DISCARD = "discard"
    FLUSH = "flush"


ALL_OPS: frozenset[Op] = frozenset(Op)
#: Request kinds that carry a byte range.
RANGED_OPS: frozenset[Op] = ALL_OPS - {Op.FLUSH}
#: ``end`` of a rule with only a ``start``: past the end of any device.
UNBOUNDED = 1 << 63


def errno_value(value: int | str, key: str = "errno") -> int:
    """``"EIO"`` or ``5`` -> 5. Any positive errno below 4096 is accepted
    (:func:`rig.core.values.errno`)."""
    try:
        return values.errno(key, value)
    except values.BadValue as e:
        raise RuleError(key, e.message) from None


def errno_name(code: int) -> str:
    """5 -> ``"EIO"``; an unknown number stays a number in text form."""
    return _errno.errorcode.get(code, str(code))


def injected_error(code: int) -> OSError:
    """The OSError an injected fault raises: the same shape as a real one."""
    return OSError(code, os.strerror(code))


# ------------------------------------------------------------------------------------ actions
class _WithErrno:
    """For actions that fail with an ``errno`` given by name or number: stores the number."""

    errno: int | str

    def _normalise_errno(self) -> None:
        object.__setattr__(self, "errno", errno_value(self.errno))

    def __post_init__(self) -> None:
        self._normalise_errno()

    @property
    def code(self) -> int:
        assert isinstance(self.errno, int)
        return self.errno


@dataclass(frozen=True)
class Error(_WithErrno):
    """Fail the request with ``errno`` (name or number); it is not forwarded."""

    errno: int | str = _errno.EIO
    kind: ClassVar[str] = "error"
    ops: ClassVar[frozenset[Op]] = ALL_OPS
    terminal: ClassVar[bool] = True



@dataclass(frozen=True)
class Delay:
    """Sleep ``seconds`` on the engine's clock, then carry on (non-terminal)."""

    seconds: float
    kind: ClassVar[str] = "delay"
    ops: ClassVar[frozenset[Op]] = ALL_OPS
    terminal: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_seconds("seconds", self.seconds)


@dataclass(frozen=True)
class Corrupt:
    """Reads: flip ``bits`` distinct seeded bits of the returned data within the rule's range."""

    bits: int = 1
    kind: ClassVar[str] = "corrupt"
    ops: ClassVar[frozenset[Op]] = frozenset({Op.READ})
    terminal: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_int("bits", self.bits, 1)


@dataclass(frozen=True)
class Torn(_WithErrno):
    """Writes: only the first ``sectors`` units of ``unit`` bytes land (unit boundaries are
    absolute device offsets, as a real device tears at its sector boundaries). Then the write
    succeeds (``ack``) or fails with ``errno``."""

    sectors: int = 1
    unit: int = 512
    ack: bool = False
    errno: int | str = _errno.EIO
    kind: ClassVar[str] = "torn"
    ops: ClassVar[frozenset[Op]] = frozenset({Op.WRITE})
    terminal: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_int("sectors", self.sectors, 0)
        check_int("unit", self.unit, 1)
        if not isinstance(self.ack, bool):
            raise RuleError("ack", f"expected true or false, got {values.shown(self.ack)}")
        self._normalise_errno()

    def landed(self, offset: int, length: int) -> int:
        """How many bytes of a write of ``length`` at ``offset`` land."""
        end = (offset // self.unit + self.sectors) * self.unit
        return max(0, min(offset + length, end) - offset)


@dataclass(frozen=True)
class Drop:
    """Writes, write-zeroes, discards: acknowledged but not forwarded (the old data stays)."""

    kind: ClassVar[str] = "drop"
    ops: ClassVar[frozenset[Op]] = frozenset({Op.WRITE, Op.ZERO, Op.DISCARD})
    terminal: ClassVar[bool] = True


@dataclass(frozen=True)
class LyingFlush:
    """Flushes: acknowledged, not forwarded (nothing below is flushed)."""

    kind: ClassVar[str] = "lying-flush"
    ops: ClassVar[frozenset[Op]] = frozenset({Op.FLUSH})
    terminal: ClassVar[bool] = True


@dataclass(frozen=True)
class Gone(_WithErrno):
    """The device is gone: this request and every later one fail with ``errno``."""

    errno: int | str = _errno.ENODEV
    kind: ClassVar[str] = "gone"
    ops: ClassVar[frozenset[Op]] = ALL_OPS
    terminal: ClassVar[bool] = True



@dataclass(frozen=True)
class SetState:
    """Only change the state to the rule's ``new_state`` (non-terminal)."""

    kind: ClassVar[str] = "set-state"
    ops: ClassVar[frozenset[Op]] = ALL_OPS
    terminal: ClassVar[bool] = False


Action = Error | Delay | Corrupt | Torn | Drop | LyingFlush | Gone | SetState
ACTIONS: dict[str, type[Action]] = {
    cls.kind: cls for cls in (Error, Delay, Corrupt, Torn, Drop, LyingFlush, Gone, SetState)
}


def _ops(value: str | Iterable[str]) -> frozenset[Op]:
    if not isinstance(value, str | Iterable):
        raise RuleError("op", f"expected an op name or a list of them, got {values.shown(value)}")
    items = [value] if isinstance(value, str) else list(value)
    out: set[Op] = set()
    for item in items:
        try:
            out.add(Op(item))
        except ValueError:
            raise RuleError("op", f"unknown op {values.shown(item)} (one of: "
                            f"{', '.join(o.value for o in Op)})") from None
    if not out:
        raise RuleError("op", "must name at least one op")
    return frozenset(out)


# -------------------------------------------------------------------------------------- rule
@dataclass(frozen=True)
class Rule(Trigger):
    """One fault rule: its action, the requests it looks at (``op``, ``start``/``end``) and its
    :class:`~rig.faults.trigger.Trigger`. See the module docstring.

    ``op`` accepts a name or names (``"read"``, ``("write", "zero")``) and is stored as a
    ``frozenset[Op]``; ``None`` means every kind the action acts on (minus ``flush`` when the rule
    has a byte range). ``name`` defaults to one the engine assigns (``rule-N``). Every field but
    ``action`` is a keyword.
    """

    action: Action
    _: KW_ONLY
    op: str | Iterable[str] | None = None
    start: int | None = None
    end: int | None = None
    _ops: frozenset[Op] = field(init=False, repr=False, compare=False, default=ALL_OPS)

    def __post_init__(self) -> None:
        action = self.action
        if not isinstance(action, tuple(ACTIONS.values())):
            raise RuleError("action", f"expected one of {', '.join(ACTIONS)}, "
                            f"got {values.shown(action)}")
        self._check_name()
        self._check_range()
        ranged = self.start is not None or self.end is not None
        if self.op is None:
            ops = action.ops - {Op.FLUSH} if ranged else action.ops
        else:
            ops = _ops(self.op)
            wrong = ops - action.ops
            if wrong:
                raise RuleError("op", f"action {action.kind!r} acts only on "
                                f"{', '.join(sorted(action.ops))}, not {', '.join(sorted(wrong))}")
            if ranged and Op.FLUSH in ops:
                raise RuleError("op", "a byte range never matches a flush (it has no range)")
        object.__setattr__(self, "op", ops)
        object.__setattr__(self, "_ops", ops)
        self._check_trigger(sets_state=isinstance(action, SetState))

    def _check_range(self) -> None:
        for key in ("start", "end"):
            value = getattr(self, key)
            if value is not None:
                check_int(key, value, 0)
        if self.end is not None and self.end <= (self.start or 0):
            raise RuleError("end", f"must be greater than 'start' ({self.start or 0}), "
                            f"got {self.end}")

    # ------------------------------------------------------------------ queries
    @property
    def ops(self) -> frozenset[Op]:
        """The request kinds this rule matches."""
        return self._ops

    @property
    def ranged(self) -> bool:
        return self.start is not None or self.end is not None

    @property
    def span(self) -> tuple[int, int]:
        """``[start, end)``; an open side extends to 0 or past any device."""
        return (self.start or 0, UNBOUNDED if self.end is None else self.end)

    def with_name(self, name: str) -> Rule:
        """A copy with another name (the engine names unnamed rules)."""
        return replace(self, name=name)
