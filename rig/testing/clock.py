"""A virtual clock for deterministic tests of time-dependent behaviour (delays, time windows).

It satisfies :class:`rig.faults.engine.Clock`: ``monotonic()`` returns the virtual time and
``sleep(s)`` advances it by ``s`` at once (recording the sleep), so a test of a one-hour delay
takes no time and asserts exact numbers (the qemu-iotests ``clock_step`` pattern).
"""

from __future__ import annotations

import threading


class VirtualClock:
    """Virtual time, starting at ``start`` seconds. Thread-safe."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []
        """Every ``sleep`` call's argument, in order."""

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"sleep length must be non-negative, got {seconds}")
        with self._lock:
            self.sleeps.append(seconds)
            self._now += seconds

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass (without counting as a sleep)."""
        if seconds < 0:
            raise ValueError(f"time does not run backwards: {seconds}")
        with self._lock:
            self._now += seconds
