"""A virtual clock for deterministic tests of time-dependent behaviour (delays, throttling).

It satisfies :class:`rig.core.clock.Clock` (and ``WaitClock``): ``monotonic()`` returns the
virtual time, so a test of a one-hour delay takes no real time and asserts exact numbers (the
qemu-iotests ``clock_step`` pattern).

Two ways to let time pass:

* **One thread (the default).** ``sleep(s)`` advances the time by ``s`` at once and records it.
  ``wait(cond, t)`` advances by ``t`` (by nothing when ``t`` is None) and returns.
* **Several threads.** Threads that run under ``with clock.running():`` are *participants*. A
  participant's ``sleep`` / ``wait`` blocks (for real) until virtual time reaches its wake-up.
  Time never runs while a participant is awake: when every participant is asleep, the clock jumps
  to the earliest wake-up and wakes whoever is due. ``wait`` also returns on ``kick()`` (the
  condition it waits for may have changed). So threads sleeping concurrently wake in virtual-time
  order, and the result does not depend on how the OS schedules them, as long as every thread
  that can make progress is a participant. If every participant waits with no wake-up (a
  deadlock), ``wait`` raises :class:`VirtualDeadlock` in all of them.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator


class VirtualDeadlock(RuntimeError):
    """Every participant waits forever: nothing can advance the virtual time."""


class VirtualClock:
    """Virtual time, starting at ``start`` seconds. Thread-safe."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._cv = threading.Condition()
        self._participants: set[int] = set()
        self._asleep: dict[int, float] = {}
        self._kicks = 0
        self._deadlock = False
        self.sleeps: list[float] = []
        """Every ``sleep`` call's argument, in order."""

    def monotonic(self) -> float:
        with self._cv:
            return self._now

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Make the calling thread a participant for the ``with`` block (see the module doc)."""
        me = threading.get_ident()
        with self._cv:
            self._participants.add(me)
        try:
            yield
        finally:
            with self._cv:
                self._participants.discard(me)
                self._maybe_advance()

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"sleep length must be non-negative, got {seconds}")
        with self._cv:
            self.sleeps.append(seconds)
            if threading.get_ident() not in self._participants:
                self._now += seconds
                return
            self._block(self._now + seconds, kickable=False)

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        """Release ``cond``, let up to ``timeout`` virtual seconds pass, re-acquire ``cond``."""
        if timeout is not None and timeout < 0:
            timeout = 0.0
        cond.release()
        try:
            with self._cv:
                if threading.get_ident() not in self._participants:
                    self._now += timeout or 0.0
                    return
                self._block(math.inf if timeout is None else self._now + timeout, kickable=True)
        finally:
            cond.acquire()

    def kick(self) -> None:
        """Wake every participant blocked in ``wait`` (time does not move)."""
        with self._cv:
            self._kicks += 1
            self._cv.notify_all()

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass (without counting as a sleep)."""
        if seconds < 0:
            raise ValueError(f"time does not run backwards: {seconds}")
        with self._cv:
            self._now += seconds
            self._cv.notify_all()

    # Called with self._cv held.
    def _block(self, wake: float, *, kickable: bool) -> None:
        me = threading.get_ident()
        kicks = self._kicks
        self._asleep[me] = wake
        try:
            while True:
                if self._now >= wake or (kickable and self._kicks != kicks):
                    return
                self._maybe_advance()
                if self._now >= wake or (kickable and self._kicks != kicks):
                    return
                if self._deadlock:
                    raise VirtualDeadlock("every participant waits with no wake-up time")
                self._cv.wait()
        finally:
            del self._asleep[me]
            if not self._asleep:
                self._deadlock = False

    def _maybe_advance(self) -> None:
        if not self._participants or not self._participants <= self._asleep.keys():
            return
        target = min(self._asleep[p] for p in self._participants)
        if target == math.inf:
            self._deadlock = True
            self._cv.notify_all()
            return
        if target > self._now:
            self._now = target
        self._cv.notify_all()
