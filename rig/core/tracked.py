"""Tracked requests: in-flight writes, so that overlapping read-modify-writes serialize.

As in QEMU, a *serialising* request (an RMW write that reads and rewrites whole aligned blocks)
waits for every overlapping in-flight write, and an ordinary write waits for overlapping
serialising requests. A request registers only once nothing conflicts, so waiters hold nothing
and cannot deadlock.
"""

from __future__ import annotations

import threading


class TrackedRequest:
    __slots__ = ("end", "offset", "serialising")

    def __init__(self, offset: int, end: int, serialising: bool) -> None:
        self.offset = offset
        self.end = end
        self.serialising = serialising

    def __repr__(self) -> str:
        return (f"TrackedRequest(offset={self.offset!r}, end={self.end!r}, "
                f"serialising={self.serialising!r})")

    def overlaps(self, offset: int, end: int) -> bool:
        return offset < self.end and self.offset < end


class RequestTracker:
    def __init__(self) -> None:
        # The lock itself is taken with ``with self._lock`` (its C-level enter and exit) where
        # no wait is needed: Condition's own __enter__ is Python code, on every write's path.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._active: list[TrackedRequest] = []
        #: How many of them are serialising: with none, an ordinary request conflicts with
        #: nothing, and the scan of every request in flight is skipped.
        self._serialising = 0
        self._waiters = 0

    def begin(self, offset: int, end: int, serialising: bool) -> TrackedRequest:
        req = TrackedRequest(offset, end, serialising)
        with self._cond:
            while self._conflict(req):
                self._waiters += 1
                try:
                    self._cond.wait()
                finally:
                    self._waiters -= 1
            self._active.append(req)
            if serialising:
                self._serialising += 1
        return req

    def try_begin(self, offset: int, end: int) -> TrackedRequest | None:
        """An ordinary (not serialising) request registered now, or None if it would have to
        wait for an overlapping serialising one."""
        req = TrackedRequest(offset, end, False)
        with self._lock:
            if self._serialising and self._conflict(req):
                return None
            self._active.append(req)
        return req

    def _conflict(self, req: TrackedRequest) -> bool:
        if not (req.serialising or self._serialising):
            return False
        for other in self._active:
            if (req.serialising or other.serialising) and other.overlaps(req.offset, req.end):
                return True
        return False

    def end(self, req: TrackedRequest) -> None:
        with self._lock:
            self._active.remove(req)
            if req.serialising:
                self._serialising -= 1
            if self._waiters:
                self._cond.notify_all()

    def in_flight(self) -> int:
        with self._cond:
            return len(self._active)
