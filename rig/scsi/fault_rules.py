"""SCSI-layer fault rules as data: what a command must look like (predicates) and how the
"device" answers it instead (action). They are matched where the ``sg`` node sends SG_IO, so an
injected answer is decoded exactly like a real one.

Predicates (all must hold): ``opcode`` (numbers or names, see :data:`OPCODE_NAMES`), an LBA
range ``lba-start``/``lba-end`` (``[start, end)``, overlapping the command's blocks; commands
without an LBA in their CDB never match a ranged rule), then the rule's
:class:`~rig.faults.trigger.Trigger`: ``state``, ``after``/``before``, ``nth``/``every``, seeded
``probability``, ``new-state`` and ``once``, the block layer's ``faults`` rules' own
(:mod:`rig.faults.rules`): one class, one parser, one matcher.

Actions:

* ``check-condition``: status CHECK CONDITION with ``sense`` (``"03/11/00"`` = KEY/ASC/ASCQ in
  hex), fixed format unless ``descriptor = true``; INFORMATION is the first LBA of the command
  inside the rule's range (as a disk reports a medium error) unless ``information`` is given
  (a number, or ``"none"`` for no INFORMATION field). With ``transfer = true`` the command
  runs and moves its data first (RECOVERED ERROR; scsi_debug's injected errors do this);
* ``transport``: a host status (``host = "DID_TIME_OUT"``, ``"DID_NO_CONNECT"``, or a number),
  the command never reaches the device;
* ``delay``: ``seconds`` of latency, then the command goes on (non-terminal);
* ``short``: the command runs, but ``resid`` bytes fewer than asked are transferred (data in is
  cut; data out: the device reports the residual);
* ``set-state``: only ``new-state``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, ClassVar

from rig.core import values
from rig.faults.trigger import (
    TRIGGER_KEYS,
    RuleError,
    Trigger,
    built,
    check_int,
    check_seconds,
    named,
    trigger_fields,
)
from rig.scsi.status import HOST_BY_NAME

#: Command names accepted for ``opcode`` (and the groups ``read``/``write``).
OPCODE_NAMES: dict[str, tuple[int, ...]] = {
    "test-unit-ready": (0x00,), "request-sense": (0x03,), "read-6": (0x08,),
    "write-6": (0x0A,), "inquiry": (0x12,), "mode-sense-6": (0x1A,),
    "start-stop-unit": (0x1B,), "prevent-allow-medium-removal": (0x1E,),
    "read-capacity-10": (0x25,), "read-10": (0x28,), "write-10": (0x2A,),
    "synchronize-cache-10": (0x35,), "unmap": (0x42,), "read-toc": (0x43,),
    "get-event-status-notification": (0x4A,), "mode-sense-10": (0x5A,), "read-16": (0x88,),
    "write-16": (0x8A,), "synchronize-cache-16": (0x91,), "write-same-16": (0x93,),
    "service-action-in-16": (0x9E,), "report-luns": (0xA0,), "read-12": (0xA8,),
    "write-12": (0xAA,),
    "read": (0x08, 0x28, 0xA8, 0x88), "write": (0x0A, 0x2A, 0xAA, 0x8A),
    "synchronize-cache": (0x35, 0x91),
}
_SENSE = re.compile(r"^\s*([0-9a-fA-F]{1,2})\s*/\s*([0-9a-fA-F]{1,2})\s*/\s*([0-9a-fA-F]{1,2})\s*$")
UNBOUNDED_LBA = 1 << 64
#: ``information = "none"``: the sense carries no INFORMATION field.
NO_INFORMATION = -1


# ------------------------------------------------------------------------------ actions
@dataclass(frozen=True)
class CheckCondition:
    key: int
    asc: int
    ascq: int = 0
    descriptor: bool = False
    information: int | None = None
    transfer: bool = False
    """The command runs and moves its data, then reports the CHECK CONDITION (as RECOVERED
    ERROR does, and as scsi_debug does for its injected errors)."""
    kind: ClassVar[str] = "check-condition"
    terminal: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for name, value, top in (("sense", self.key, 0x0F), ("sense", self.asc, 0xFF),
                                 ("sense", self.ascq, 0xFF)):
            check_int(name, value, 0, top)
        if self.information is not None and self.information != NO_INFORMATION:
            check_int("information", self.information, 0, (1 << 64) - 1)


@dataclass(frozen=True)
class Transport:
    host: int
    kind: ClassVar[str] = "transport"
    terminal: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_int("host", self.host, 1, 0xFFFF)


@dataclass(frozen=True)
class Latency:
    seconds: float
    kind: ClassVar[str] = "delay"
    terminal: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_seconds("seconds", self.seconds)


@dataclass(frozen=True)
class Short:
    resid: int
    kind: ClassVar[str] = "short"
    terminal: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_int("resid", self.resid, 1)


@dataclass(frozen=True)
class StateOnly:
    kind: ClassVar[str] = "set-state"
    terminal: ClassVar[bool] = False


ScsiAction = CheckCondition | Transport | Latency | Short | StateOnly


# ------------------------------------------------------------------------------ rule
@dataclass(frozen=True)
class ScsiRule(Trigger):
    """One SCSI rule: its action, the commands it looks at (``opcodes``, the LBA range) and its
    :class:`~rig.faults.trigger.Trigger`. Every field but ``action`` is a keyword."""

    action: ScsiAction
    _: KW_ONLY
    opcodes: frozenset[int] = frozenset()
    """Empty: every command."""
    lba_start: int | None = None
    lba_end: int | None = None
    _span: tuple[int, int] = field(init=False, repr=False, compare=False, default=(0, 0))

    def __post_init__(self) -> None:
        self._check_name()
        for op in self.opcodes:
            check_int("opcode", op, 0, 0xFF)
        for key in ("lba_start", "lba_end"):
            value = getattr(self, key)
            if value is not None:
                check_int(key.replace("_", "-"), value, 0)
        start = self.lba_start or 0
        end = UNBOUNDED_LBA if self.lba_end is None else self.lba_end
        if end <= start:
            raise RuleError("lba-end", f"must be greater than 'lba-start' ({start}), got {end}")
        object.__setattr__(self, "_span", (start, end))
        self._check_trigger(sets_state=isinstance(self.action, StateOnly))

    @property
    def ranged(self) -> bool:
        return self.lba_start is not None or self.lba_end is not None

    @property
    def span(self) -> tuple[int, int]:
        return self._span


# ------------------------------------------------------------------------------ loading
# Every value is parsed with rig.core.values (the block rules' parsers), so a value that loads
# can never fail later at a command.
_MAX_LBA = (1 << 64) - 1


def _opcodes(value: Any) -> frozenset[int]:
    items = value if isinstance(value, list | tuple) else [value]
    out: set[int] = set()
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            out.add(values.integer("opcode", item, 0, 0xFF))
        elif isinstance(item, str) and item.strip().lower() in OPCODE_NAMES:
            out.update(OPCODE_NAMES[item.strip().lower()])
        elif isinstance(item, str) and re.fullmatch(r"\s*(0x)?[0-9a-fA-F]{1,2}h?\s*", item,
                                                    re.ASCII):
            out.add(int(item.strip().lower().removesuffix("h"), 16))
        else:
            raise RuleError("opcode", f"unknown command {values.shown(item)} (a number such as "
                            f"0x28, or one of: {', '.join(OPCODE_NAMES)})")
    return frozenset(out)


def _sense(value: Any) -> tuple[int, int, int]:
    if isinstance(value, list | tuple) and len(value) == 3:
        return (values.integer("sense", value[0], 0, 0x0F),
                values.integer("sense", value[1], 0, 0xFF),
                values.integer("sense", value[2], 0, 0xFF))
    m = _SENSE.match(value) if isinstance(value, str) else None
    if m is None:
        raise RuleError("sense", f"expected KEY/ASC/ASCQ in hex (e.g. '03/11/00'), "
                        f"got {values.shown(value)}")
    k, a, q = (int(g, 16) for g in m.groups())
    return k, a, q


def _host(value: Any) -> int:
    if isinstance(value, str) and value.strip().upper() in HOST_BY_NAME:
        return HOST_BY_NAME[value.strip().upper()]
    try:
        return values.integer("host", value, 1, 0xFFFF)
    except values.BadValue:
        raise RuleError("host", f"unknown host status {values.shown(value)} (e.g. "
                        "DID_TIME_OUT, DID_NO_CONNECT, or a number 1..0xffff)") from None


def _information(value: Any) -> int:
    if isinstance(value, str) and value.strip().lower() == "none":
        return NO_INFORMATION
    return values.integer("information", value, 0, _MAX_LBA)


_COMMON = {"action", "opcode", "lba-start", "lba-end", *TRIGGER_KEYS}
_OWN = {"check-condition": {"sense", "descriptor", "information", "transfer"},
        "transport": {"host"}, "delay": {"seconds"}, "short": {"resid"}, "set-state": set()}


def scsi_rule_from_dict(table: Mapping[str, Any], index: int = 0) -> ScsiRule:
    """One rule table -> :class:`ScsiRule`; a mistake is a ConfigError naming rule and key."""
    name = table.get("name") if isinstance(table, Mapping) else None
    return built(_build, table, f"SCSI rule {index}" + (f" ({values.shown(name)})" if name
                                                        else ""))


def _build(table: Mapping[str, Any]) -> ScsiRule:
    if not isinstance(table, Mapping):
        raise RuleError("rule", f"expected a table of keys, got {values.shown(table)}")
    kind = table.get("action")
    if not isinstance(kind, str) or kind not in _OWN:
        raise RuleError("action", f"expected one of {', '.join(_OWN)}, got {values.shown(kind)}")
    for key in table:
        if key not in _COMMON and key not in _OWN[kind]:
            raise RuleError(str(key)[:80], f"unknown key for action {kind!r}")
    action = _action(kind, table)
    kw: dict[str, Any] = {}
    if "opcode" in table:
        kw["opcodes"] = _opcodes(table["opcode"])
    for key in ("lba-start", "lba-end"):
        if key in table:
            kw[key.replace("-", "_")] = values.count(key, table[key], maximum=_MAX_LBA)
    return ScsiRule(action, **kw, **trigger_fields(table))


def _action(kind: str, table: Mapping[str, Any]) -> ScsiAction:
    if kind == "check-condition":
        if "sense" not in table:
            raise RuleError("sense", "missing (e.g. sense = '03/11/00')")
        sk, asc, ascq = _sense(table["sense"])
        info = table.get("information")
        return CheckCondition(sk, asc, ascq,
                              values.boolean("descriptor", table.get("descriptor", False)),
                              None if info is None else _information(info),
                              values.boolean("transfer", table.get("transfer", False)))
    if kind == "transport":
        return Transport(_host(table.get("host", "DID_TIME_OUT")))
    if kind == "delay":
        return Latency(values.seconds("seconds", table.get("seconds", 0)))
    if kind == "short":
        return Short(values.count("resid", table.get("resid", 512), minimum=1))
    return StateOnly()


def scsi_rules_from_data(data: Iterable[Mapping[str, Any]], source: str = "") -> list[ScsiRule]:
    """Rule tables -> rules, each named (``scsi-N`` by default) and the names unique."""
    return named(data, scsi_rule_from_dict, source=source, default="scsi-{}",
                 taken=lambda index, table, name: f"SCSI rule {index}: 'name': "
                                                  f"{values.shown(name)} is already taken")
