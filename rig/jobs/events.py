"""Job events, shaped as QEMU's QMP events: ``JOB_STATUS_CHANGE``, ``BLOCK_JOB_ERROR``,
``BLOCK_JOB_COMPLETED`` (with ``error`` when the job failed), ``BLOCK_JOB_CANCELLED``.

A job hands each event to its listeners (callbacks, called in the job's thread) and keeps it in
a :class:`JobEventLog`, which a caller in another thread can wait on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

JOB_STATUS_CHANGE = "JOB_STATUS_CHANGE"
BLOCK_JOB_ERROR = "BLOCK_JOB_ERROR"
BLOCK_JOB_COMPLETED = "BLOCK_JOB_COMPLETED"
BLOCK_JOB_CANCELLED = "BLOCK_JOB_CANCELLED"


@dataclass(frozen=True)
class JobEvent:
    """One event: its QMP name and its ``data`` member."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_qmp(self) -> dict[str, Any]:
        return {"event": self.name, "data": dict(self.data)}


Listener = Callable[[JobEvent], None]


class JobEventLog:
    """Every event a job emitted, in order; thread-safe, with a blocking :meth:`wait_for`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._events: list[JobEvent] = []

    def append(self, event: JobEvent) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    def all(self) -> list[JobEvent]:
        with self._cond:
            return list(self._events)

    def named(self, name: str) -> list[JobEvent]:
        return [e for e in self.all() if e.name == name]

    def statuses(self) -> list[str]:
        """The ``status`` of every JOB_STATUS_CHANGE so far."""
        return [str(e.data["status"]) for e in self.named(JOB_STATUS_CHANGE)]

    def wait_for(self, match: Callable[[JobEvent], bool], timeout: float = 30.0) -> JobEvent:
        """The first event (already logged or still to come) that ``match`` accepts; real-time
        ``timeout`` (a job that hangs must not hang the caller). TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self._events:
                    if match(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching job event within {timeout:g} s "
                                       f"(seen: {[e.name for e in self._events]})")
                self._cond.wait(left)

    def wait_status(self, status: str, timeout: float = 30.0) -> JobEvent:
        return self.wait_for(lambda e: e.name == JOB_STATUS_CHANGE
                             and e.data.get("status") == status, timeout)
