"""Where the rig gets time: the :class:`Clock` protocol and the real clock.

Everything time-dependent (fault delays and windows, throttling) takes a ``Clock``; the default
is :class:`RealClock`, tests inject :class:`rig.testing.clock.VirtualClock` and get exact,
instant, reproducible timings.

``wait(cond, timeout)`` is how a thread blocks on a condition variable for at most ``timeout``
seconds *of the clock's time* (``None``: until notified). The caller holds ``cond``; ``wait``
returns holding it again, possibly early (spurious wake-ups allowed, as with
``threading.Condition.wait``). Code that blocks on a condition and a deadline at once (the
throttle group) must use it, so that a virtual clock can let its time run. Whoever changes the
state waited for calls ``cond.notify_all()`` and then ``clock.kick()``.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Where a component gets time and sleeps."""

    def monotonic(self) -> float:
        """Seconds, monotonic, arbitrary origin."""
        ...

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of this clock's time pass for the calling thread."""
        ...


class WaitClock(Clock, Protocol):
    """A clock that can also bound a condition-variable wait (see the module docstring)."""

    def wait(self, cond: threading.Condition, timeout: float | None) -> None: ...

    def kick(self) -> None: ...


class RealClock:
    """``time.monotonic`` and ``time.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        cond.wait(timeout)

    def kick(self) -> None:
        """Nothing to do: real waiters are woken by ``cond.notify_all()``."""
