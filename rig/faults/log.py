"""The event log: what fired, on which request, where and when; saved as JSON lines.

One :class:`Event` per rule that fired on a request (a request can fire a ``delay`` and an
``error``: two events with the same ``seq``). ``seq`` numbers every request the filter saw
(reads, writes, write-zeroes, discards, flushes), from 1, so a saved log says exactly which
request of a workload failed; :class:`rig.faults.replay.Replayer` fires the same faults at the same
numbers again.

File format (``.jsonl``): the first line is a header
``{"format": "blockrig-faults-log", "version": 1, "seed": 123, "rules": [...]}``, each further line
one event, e.g. ``{"seq": 7, "time": 0.0123, "op": "write", "offset": 4096, "length": 512,
"rule": "torn-1", "action": "torn", "errno": 5, "errno_name": "EIO", "landed": 0}``. Keys with
their default value are left out.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rig.core.outputs import open_output
from rig.errors import ConfigError
from rig.faults.rules import errno_name

FORMAT = "blockrig-faults-log"
VERSION = 1


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
        return cls(
            seq=int(data["seq"]), time=float(data["time"]), op=str(data["op"]),
            offset=int(data["offset"]), length=int(data["length"]), rule=str(data["rule"]),
            action=str(data["action"]), errno=int(data.get("errno", 0)),
            delay=float(data.get("delay", 0.0)),
            bits=tuple(int(b) for b in data.get("bits", ())),
            landed=None if data.get("landed") is None else int(data["landed"]),
            state=None if data.get("state") is None else int(data["state"]),
        )

    def outcome(self) -> tuple[Any, ...]:
        """Everything but the time: what a replay must reproduce."""
        return (self.seq, self.op, self.offset, self.length, self.rule, self.action, self.errno,
                self.delay, self.bits, self.landed, self.state)


class EventLog:
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
    def load(cls, path: str | Path) -> EventLog:
        """Read a log written by :meth:`save` or :meth:`stream_to`."""
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the fault log: {e.strerror}") from None
        if not lines:
            raise ConfigError(f"{path}: empty file, not a fault log")
        header = _json_line(path, 1, lines[0])
        if header.get("format") != FORMAT:
            raise ConfigError(f"{path}: line 1: not a fault log (no '\"format\": \"{FORMAT}\"')")
        if header.get("version") != VERSION:
            raise ConfigError(f"{path}: line 1: unsupported version {header.get('version')!r}")
        seed = header.get("seed", 0)
        rules = header.get("rules", [])
        if not isinstance(seed, int) or not isinstance(rules, list):
            raise ConfigError(f"{path}: line 1: 'seed' must be a number and 'rules' a list")
        log = cls(seed, rules)
        for lineno, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            try:
                log._events.append(Event.from_json(_json_line(path, lineno, line)))
            except (KeyError, TypeError, ValueError) as e:
                if isinstance(e, ConfigError):
                    raise
                raise ConfigError(f"{path}: line {lineno}: not an event ({e!r})") from None
        return log


def _json_line(path: str | Path, lineno: int, line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: line {lineno}: bad JSON: {e.msg}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: line {lineno}: expected a JSON object")
    return value
