"""A single-threaded, deterministic driver of a :class:`ThrottleGroup` in virtual time.

Each stream is one member's request list; a request is ``(is_write, size)``. A stream keeps up
to ``depth`` requests in flight (``depth`` large = qemu-io's ``aio_*`` sequence, all submitted at
time 0; ``depth`` 1 = synchronous ``read``/``write`` commands). I/O itself takes ``service_ns``
(default 0). The result is every request's admission time, exactly reproducible: this is what the
property tests check and what the filter does under a real clock, minus the threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rig.throttle.group import Member, ThrottleGroup, Ticket
from rig.throttle.limits import ThrottleLimits

Request = tuple[bool, int]


@dataclass
class Stream:
    """One member's workload."""

    requests: Sequence[Request]
    depth: int = 1 << 30
    start_ns: int = 0
    admitted: list[int] = field(default_factory=list)
    """Admission time (ns) of each request, in submission order."""


class Starvation(AssertionError):
    """Requests are queued but no timer is armed: nothing would ever wake them."""


class _Clock:
    def monotonic(self) -> float:
        return 0.0

    def sleep(self, seconds: float) -> None:
        raise AssertionError("the simulator never sleeps")

    def wait(self, cond: object, timeout: float | None) -> None:
        raise AssertionError("the simulator never waits")

    def kick(self) -> None:
        pass


def simulate(limits: ThrottleLimits, streams: Sequence[Stream], service_ns: int = 0,
             group: ThrottleGroup | None = None,
             changes: Sequence[tuple[int, ThrottleLimits]] = ()) -> ThrottleGroup:
    """Run ``streams`` (one member each) through one group; fills ``Stream.admitted``.

    ``changes``: ``(time_ns, limits)`` pairs, applied with ``set_limits`` at those times (as
    block_set_io_throttle while I/O runs)."""
    pending_changes = sorted(changes, key=lambda c: c[0])
    g = group if group is not None else ThrottleGroup("sim", limits, _Clock())
    members: list[Member] = [g.join(f"m{i}") for i in range(len(streams))]
    nxt = [0] * len(streams)
    waiting: list[list[tuple[int, Ticket]]] = [[] for _ in streams]
    running: list[list[int]] = [[] for _ in streams]  # completion times
    now = 0
    for s in streams:
        s.admitted = [-1] * len(s.requests)
    with g.cond:
        while True:
            while pending_changes and pending_changes[0][0] <= now:
                g.set_limits(pending_changes.pop(0)[1], now)
            for i, s in enumerate(streams):
                for idx, t in list(waiting[i]):
                    if t.granted:
                        waiting[i].remove((idx, t))
                        s.admitted[idx] = t.granted_at
                        running[i].append(t.granted_at + service_ns)
                running[i] = [c for c in running[i] if c > now]
                while (nxt[i] < len(s.requests) and now >= s.start_ns
                       and len(waiting[i]) + len(running[i]) < s.depth):
                    is_write, size = s.requests[nxt[i]]
                    ticket = g.intercept(members[i], is_write, size, now)
                    if ticket is None:
                        s.admitted[nxt[i]] = now
                        running[i].append(now + service_ns)
                        running[i] = [c for c in running[i] if c > now]
                    else:
                        waiting[i].append((nxt[i], ticket))
                    nxt[i] += 1
                    if ticket is not None and ticket.granted:
                        break
            if any(t.granted for w in waiting for _, t in w):
                continue
            events = [c for r in running for c in r]
            events += [s.start_ns for i, s in enumerate(streams)
                       if s.start_ns > now and nxt[i] < len(s.requests)]
            deadline = g.next_deadline()
            if deadline is not None:
                events.append(deadline)
            if pending_changes:
                events.append(pending_changes[0][0])
            if not events:
                if any(waiting):
                    raise Starvation(f"queued requests and no timer at {now} ns")
                return g
            now = max(now, min(events))
            g.fire_due(now)
