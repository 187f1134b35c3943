"""The event log: what fired, on which request, where and when; saved as JSON lines.

One :class:`Event` per rule that fired on a request (a request can fire a ``delay`` and an
``error``: two events with the same ``seq``). ``seq`` numbers every request the filter saw
(reads, writes, write-zeroes, discards, flushes), from 1, so a saved log says exactly which
request of a workload failed; :class:`rig.faults.fault_replay.Replayer` fires the same faults at
the same numbers again.

File format (``.jsonl``): the first line is a header
``{"format": "blockrig-faults-log", "version": 1, "seed": 123, "rules": [...]}``, each further line
one event, e.g. ``{"seq": 7, "time": 0.0123, "op": "write", "offset": 4096, "length": 512,
"rule": "torn-1", "action": "torn", "errno": 5, "errno_name": "EIO", "landed": 0}``. Keys with
their default value are left out.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rig.core import values
from rig.core.documents import decode, loads_json, read_document
from rig.core.outputs import open_output
from rig.errors import ConfigError
from rig.faults.rules import ACTIONS, Op, errno_name

FORMAT = "blockrig-faults-log"
VERSION = 1
#: An event's keys, in the order a line has them.
_ORDER = ("seq", "time", "op", "offset", "length", "rule", "action", "errno", "errno_name",
          "delay", "bits", "landed", "state")
_KEYS = frozenset(_ORDER)
_OPS = tuple(op.value for op in Op)
#: SCSI-layer firings (rig.scsi.fault_engine): ``scsi-`` and the opcode in hex.
_SCSI_OP = re.compile(r"scsi-[0-9a-f]{2}", re.ASCII)
#: The longest rule, op or action name an event may carry.
_MAX_NAME = 256
#: The largest seed a header may give (the engine takes any int; 64 bits is what people use).
_MAX_SEED = 1 << 64
#: Seconds since the filter opened (about 31,000 years): anything larger is not a time.
_MAX_TIME = 1e12


@dataclass(frozen=True)
class Event:
    """One rule firing on one request. ``time`` is seconds since the filter opened."""

    seq: int
    time: float
    op: str
    offset: int
    length: int
    rule: str
    action: str
    errno: int = 0
    """The errno the request failed with (0: it did not fail because of this rule)."""
    delay: float = 0.0
    bits: tuple[int, ...] = ()
    """``corrupt``: the flipped bits, as absolute bit offsets on the device."""
    landed: int | None = None
    """``torn``: how many bytes of the write reached the device below."""
    state: int | None = None
    """The state the rule set, if it set one."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seq": self.seq, "time": round(self.time, 9), "op": self.op, "offset": self.offset,
            "length": self.length, "rule": self.rule, "action": self.action,
        }
        if self.errno:
            out["errno"] = self.errno
            out["errno_name"] = errno_name(self.errno)
        if self.delay:
            out["delay"] = self.delay
        if self.bits:
            out["bits"] = list(self.bits)
        if self.landed is not None:
            out["landed"] = self.landed
        if self.state is not None:
            out["state"] = self.state
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Event:
        """An event from its JSON object, every value checked with its bounded parser
        (:mod:`rig.core.values`): a :class:`~rig.core.values.BadValue` naming the key
        otherwise, so a log that loads can be replayed without surprises."""
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise values.BadValue(unknown[0], f"not an event key (known: {', '.join(_ORDER)})")
        for key in ("seq", "time", "op", "offset", "length", "rule", "action"):
            if key not in data:
                raise values.BadValue(key, "missing")
        op, action = _text("op", data["op"]), _text("action", data["action"])
        if op not in _OPS and not _SCSI_OP.fullmatch(op):
            raise values.BadValue("op", f"expected one of {', '.join(_OPS)} (or scsi-XX), "
                                  f"got {op!r}")
        if op in _OPS and action not in ACTIONS:
            raise values.BadValue("action", f"expected one of {', '.join(ACTIONS)}, "
                                  f"got {action!r}")
        offset = values.offset("offset", data["offset"])
        length = values.size("length", data["length"])
        if offset + length > values.MAX_OFFSET:
            raise values.BadValue("length", f"[{offset}, +{length}) ends past 2^63-1")
        code = data.get("errno", 0)
        errno = 0 if code == 0 and not isinstance(code, bool) else values.errno("errno", code)
        if action in ("error", "gone") and not errno:
            raise values.BadValue("errno", f"an {action!r} event needs the errno it failed with")
        bits = data.get("bits", [])
        if not isinstance(bits, list):
            raise values.BadValue("bits", f"expected a list of bit offsets, got {bits!r:.40}")
        lo, hi = offset * 8, (offset + length) * 8 - 1
        checked = tuple(values.integer("bits", b, lo, hi) for b in bits) if bits else ()
        landed = data.get("landed")
        return cls(
            seq=values.count("seq", data["seq"], minimum=1),
            time=values.number("time", data["time"], 0.0, _MAX_TIME, "seconds"),
            op=op, offset=offset, length=length, rule=_text("rule", data["rule"]),
            action=action, errno=errno,
            delay=values.seconds("delay", data.get("delay", 0.0)),
            bits=checked,
            landed=None if landed is None else values.size("landed", landed, maximum=length),
            state=None if data.get("state") is None else values.integer(
                "state", data["state"], -values.MAX_COUNT - 1, values.MAX_COUNT),
        )

    def outcome(self) -> tuple[Any, ...]:
        """Everything but the time: what a replay must reproduce."""
        return (self.seq, self.op, self.offset, self.length, self.rule, self.action, self.errno,
                self.delay, self.bits, self.landed, self.state)


class FaultEventLog:
    """A thread-safe, append-only list of events, with the seed and rules that produced them.

    ``stream_to(path)`` also writes every event to a file as it happens (flushed per line), so
    the log survives the process being killed.
    """

    def __init__(self, seed: int = 0, rules: list[dict[str, Any]] | None = None) -> None:
        self.seed = seed
        self._rules = rules
        #: Called for the header's rules when none were given (the engine's live rule list).
        self.rules_source: Callable[[], list[dict[str, Any]]] | None = None
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._sink: IO[str] | None = None

    @property
    def rules(self) -> list[dict[str, Any]]:
        if self._rules is not None:
            return list(self._rules)
        return self.rules_source() if self.rules_source is not None else []

    def append(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)
            if self._sink is not None:
                self._sink.write(json.dumps(event.to_json()) + "\n")
                self._sink.flush()

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __getitem__(self, index: int) -> Event:
        return self._events[index]

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

    def by_seq(self) -> dict[int, list[Event]]:
        out: dict[int, list[Event]] = {}
        for event in self.events:
            out.setdefault(event.seq, []).append(event)
        return out

    def header(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "seed": self.seed, "rules": self.rules}

    # -------------------------------------------------------------------- files
    def save(self, path: str | Path, option: str = "the fault log") -> None:
        """Write the header and every event so far to ``path`` (JSON lines), replacing a
        regular file there (:func:`rig.core.outputs.open_output`: never a device)."""
        with open_output(path, option, replace=True) as f:
            f.write(json.dumps(self.header()) + "\n")
            for event in self.events:
                f.write(json.dumps(event.to_json()) + "\n")

    def stream_to(self, path: str | Path, option: str = "the fault log") -> None:
        """Save now, then append each new event to ``path`` as it happens (replacing a regular
        file there; never a device: :func:`rig.core.outputs.open_output`)."""
        with self._lock:
            sink = open_output(path, option, replace=True)
            if self._sink is not None:
                self._sink.close()
            sink.write(json.dumps(self.header()) + "\n")
            for event in self._events:
                sink.write(json.dumps(event.to_json()) + "\n")
            sink.flush()
            self._sink = sink

    def close(self) -> None:
        with self._lock:
            if self._sink is not None:
                self._sink.close()
                self._sink = None

    @classmethod
    def load(cls, path: str | Path) -> FaultEventLog:
        """Read a log written by :meth:`save` or :meth:`stream_to`. Every line is checked here
        (JSON depth, UTF-8, each value's kind and range): a one-line ConfigError naming the
        file, the line and the key otherwise."""
        raw = read_document(path, "fault log")
        lines = [decode(line, f"{path}: line {n}")
                 for n, line in enumerate(raw.split(b"\n"), 1)]
        while lines and not lines[-1].strip():
            lines.pop()
        if not lines:
            raise ConfigError(f"{path}: empty file, not a fault log")
        header = _json_line(path, 1, lines[0])
        if header.get("format") != FORMAT:
            raise ConfigError(f"{path}: line 1: not a fault log (no '\"format\": \"{FORMAT}\"')")
        if header.get("version") != VERSION or isinstance(header.get("version"), bool):
            raise ConfigError(f"{path}: line 1: unsupported version "
                              f"{values.shown(header.get('version'))}")
        seed = header.get("seed", 0)
        rules = header.get("rules", [])
        if (not isinstance(seed, int) or isinstance(seed, bool)
                or not -_MAX_SEED <= seed <= _MAX_SEED or not isinstance(rules, list)):
            raise ConfigError(f"{path}: line 1: 'seed' must be a number (at most 2^64 either "
                              "way) and 'rules' a list")
        log = cls(seed, rules)
        for lineno, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            try:
                log._events.append(Event.from_json(_json_line(path, lineno, line)))
            except values.BadValue as e:
                raise ConfigError(f"{path}: line {lineno}: not an event: {e}") from None
        return log


def _json_line(path: str | Path, lineno: int, line: str) -> dict[str, Any]:
    value = loads_json(line, f"{path}: line {lineno}")
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: line {lineno}: expected a JSON object")
    return value


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > _MAX_NAME:
        raise values.BadValue(key, f"expected a name of at most {_MAX_NAME} characters, got "
                              f"{values.shown(value)}")
    return value
