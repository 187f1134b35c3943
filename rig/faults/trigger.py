"""When a rule fires: the :class:`Trigger` every rule engine of the rig shares.

A block-layer rule (:class:`rig.faults.rules.Rule`, the ``faults`` filter) and a SCSI-layer rule
(:class:`rig.scsi.fault_rules.ScsiRule`, the ``sg`` node) each add *which* requests they look at
(op and byte range; opcode and LBA range) and *what* they do (their action) to one trigger:

* ``name``: unique in its engine; it also seeds the rule's draws;
* ``state``: the engine's integer state (it starts at 1) must equal it;
* ``after``/``before``: the time window, in seconds since the engine started;
* ``nth`` (exactly the nth) or ``every`` (every k-th): counted among the requests that reached
  this point: ones that the rule's own predicates and ``state`` and the window let through;
* ``probability``: a seeded draw, ``draw(seed, name, count)``: reproducible, and independent
  of the other rules and of thread interleaving;
* ``new_state``: the state to set when the rule fires; ``once``: disarm after firing.

:meth:`Trigger.passes` is the one matcher for these, :data:`TRIGGER_KEYS` the one parser of their
keys in a rule table (through :mod:`rig.core.values`), and :meth:`Trigger.__post_init__` the one
validation: every mistake is a :class:`RuleError` naming the key, when the rule is built.
:func:`built` and :func:`named` turn one table, or a list of them, into rules of either layer:
one-line errors naming the rule, default names, unique names.

blkdebug (:mod:`rig.filters.blkdebug`) does not use it: its QEMU semantics are event-armed, not
per request (``docs/fault-injection.md`` says why).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from rig.core import values
from rig.errors import ConfigError


class RuleError(values.BadValue):
    """A rule's key or value is wrong; ``key`` names the schema key (``'probability'``), and
    the message reads ``'probability': ...`` (a :class:`~rig.errors.ConfigError`)."""


def check_name(name: str) -> None:
    """A rule name goes into draws, logs and messages as UTF-8: a lone surrogate (JSON's
    ``"\udc80"``) is refused here, not at the first request."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise RuleError("name", f"must be UTF-8 text, got {values.shown(name)}") from None


def check_int(key: str, value: object, minimum: int, maximum: int | None = None) -> None:
    """An int (not a bool) in ``minimum..maximum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        top = f" and <= {maximum:#x}" if maximum is not None else ""
        raise RuleError(key, f"must be an integer >= {minimum}{top}, got {values.shown(value)}")


def check_seconds(key: str, value: object) -> None:
    """A finite number of seconds in 0..1e6 (every sleep and timer accepts it)."""
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not 0 <= value <= values.MAX_SECONDS):
        raise RuleError(key, f"must be a finite number >= 0 and <= {values.MAX_SECONDS:g} "
                        f"seconds, got {values.shown(value)}")


def draw(seed: int, name: str, count: int, salt: str = "p") -> float:
    """A uniform float in [0, 1) from ``(seed, name, count)``: reproducible, order-free."""
    digest = hashlib.blake2b(f"{seed}/{name}/{count}/{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / (1 << 64)


class Armed:
    """A rule in an engine: the counters its trigger counts with. Engines subclass it."""

    __slots__ = ("enabled", "fired", "hits")

    def __init__(self) -> None:
        self.hits = 0
        """Requests that got as far as ``nth``/``every`` (see :meth:`Trigger.passes`)."""
        self.fired = 0
        self.enabled = True


@dataclass(frozen=True, kw_only=True)
class Trigger:
    """The predicates and effects every rule has (module docstring). Keyword-only, so a rule
    class that adds its own fields keeps its positional ``action`` first."""

    name: str = ""
    nth: int | None = None
    every: int | None = None
    probability: float = 1.0
    state: int | None = None
    new_state: int | None = None
    after: float | None = None
    before: float | None = None
    once: bool = False

    def __post_init__(self) -> None:
        self._check_name()
        self._check_trigger(sets_state=False)

    # Rule classes call these two in their own __post_init__, around their own checks.
    def _check_name(self) -> None:
        if not isinstance(self.name, str):
            raise RuleError("name", f"expected a string, got {values.shown(self.name)}")
        check_name(self.name)

    def _check_trigger(self, *, sets_state: bool) -> None:
        """``sets_state``: the rule's action only sets the state, so it needs a ``new_state``."""
        for key in ("nth", "every"):
            value = getattr(self, key)
            if value is not None:
                check_int(key, value, 1)
        if self.nth is not None and self.every is not None:
            raise RuleError("every", "use either 'nth' or 'every', not both")
        p = self.probability
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise RuleError("probability", f"must be between 0 and 1, got {values.shown(p)}")
        for key in ("state", "new_state"):
            value = getattr(self, key)
            if value is not None:
                check_int(key.replace("_", "-"), value, 0)
        if sets_state and self.new_state is None:
            raise RuleError("new-state", "action 'set-state' needs a 'new-state'")
        for key in ("after", "before"):
            value = getattr(self, key)
            if value is not None:
                check_seconds(key, value)
        if self.after is not None and self.before is not None and self.before <= self.after:
            raise RuleError("before", f"must be later than 'after' ({self.after}), "
                            f"got {self.before}")
        if not isinstance(self.once, bool):
            raise RuleError("once", f"expected true or false, got {values.shown(self.once)}")

    def passes(self, armed: Armed, state: int, now: float, seed: int) -> bool:
        """Whether the rule fires on a request its own predicates (op, range ...) matched:
        ``state`` (the engine's state before this request), the window (``now``: seconds since
        the engine started); then ``armed.hits`` goes up; then ``nth``/``every`` on that count;
        then the seeded ``probability`` draw."""
        if self.state is not None and self.state != state:
            return False
        if (self.after is not None and now < self.after) or (
                self.before is not None and now >= self.before):
            return False
        armed.hits += 1
        hits = armed.hits
        if self.nth is not None and hits != self.nth:
            return False
        if self.every is not None and hits % self.every:
            return False
        return not (self.probability < 1 and draw(seed, self.name, hits) >= self.probability)


# ------------------------------------------------------------------------------------ loading
Parser = Callable[[str, Any], Any]


def text(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise RuleError(key, f"expected a string, got {values.shown(value)}")
    return value


#: A trigger's keys in a rule table: key -> (parser, :class:`Trigger` field).
TRIGGER_KEYS: dict[str, tuple[Parser, str]] = {
    "name": (text, "name"),
    "nth": (values.count, "nth"),
    "every": (values.count, "every"),
    "probability": (values.probability, "probability"),
    "state": (values.count, "state"),
    "after": (values.seconds, "after"),
    "before": (values.seconds, "before"),
    "once": (values.boolean, "once"),
    "new-state": (values.count, "new_state"),
}


def trigger_fields(table: Mapping[str, Any]) -> dict[str, Any]:
    """The trigger keys of a rule table, parsed (in the table's order) -> :class:`Trigger`
    fields."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key in TRIGGER_KEYS:
            parser, field = TRIGGER_KEYS[key]
            out[field] = parser(key, value)
    return out


R = TypeVar("R", bound=Trigger)


def built(build: Callable[[Any], R], table: Any, label: str) -> R:
    """``build(table)``; a bad key or value is one ConfigError line led by ``label``
    (``rule 3 ('slow-reads')``)."""
    try:
        return build(table)
    except values.BadValue as e:  # a RuleError too
        raise ConfigError(f"{label}: {e}") from None


def named(tables: Iterable[Any], build: Callable[[Any, int], R], *, source: str, default: str,
          taken: Callable[[int, Any, str], str]) -> list[R]:
    """``build(table, index)`` for each rule table, each rule with a unique name: an unnamed
    rule gets ``default`` with its index (``"rule-{}"``); ``taken(index, table, name)`` words the
    error for a name already used. ``source`` (a file name) leads every message."""
    prefix = f"{source}: " if source else ""
    out: list[R] = []
    names: set[str] = set()
    for index, table in enumerate(tables):
        try:
            rule = build(table, index)
        except ConfigError as e:
            raise ConfigError(f"{prefix}{e}") from None
        if not rule.name:
            rule = replace(rule, name=default.format(index))
        if rule.name in names:
            raise ConfigError(f"{prefix}{taken(index, table, rule.name)}")
        names.add(rule.name)
        out.append(rule)
    return out
