"""ThrottleGroup: QEMU's request scheduler over one shared ThrottleState (block/throttle-groups.c).

The group is a state machine with no threads and no clock of its own: every call takes ``now``
(integer ns) and returns at once. A caller that must wait gets a :class:`Ticket`; it becomes
``granted`` (the request is accounted and may run) when a timer fires (:meth:`fire_due`) or when
another request's completion schedules it. The throttle filter drives it with threads and a
clock; :mod:`rig.throttle.sim` drives it single-threaded in virtual time.

QEMU's semantics, one to one:

* ``intercept``: pick the round-robin token for the direction; if a timer of that direction is
  armed anywhere in the group, or the token must wait (a timer is then armed on it), or this
  member already has queued requests of that direction, the request queues. Otherwise it is
  accounted (check *before* account) and the next request is scheduled.
* ``schedule_next``: the next member in round-robin order with queued requests gets a timer at
  ``now + wait`` or, if it need not wait, is restarted immediately (preferring the current one).
* Timers: one per member and direction; at most one armed per direction in the whole group.
* Reads and writes are separate (queues, timers, tokens); they share the total buckets.
* ``set_limits`` (QEMU's throttle_group_config) resets every level and fires pending timers now.
* ``drain_begin``/``drain_end``: while a member drains its limits are lifted (io_limits_disabled).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from rig.core.clock import RealClock, WaitClock
from rig.errors import ConfigError
from rig.throttle.bucket import NS, ThrottleState, account, compute_timer
from rig.throttle.limits import ThrottleLimits


@dataclass(eq=False)
class Ticket:
    """A queued request: ``granted`` once it has been accounted and may run."""

    size: int
    granted: bool = False
    granted_at: int = -1


class Member:
    """One node of a group (QEMU's ThrottleGroupMember)."""

    def __init__(self, group: ThrottleGroup, name: str) -> None:
        self.group = group
        self.name = name
        self.queues: tuple[deque[Ticket], deque[Ticket]] = (deque(), deque())
        self.timers: list[int | None] = [None, None]
        """Armed timer deadline (ns) per direction (0 = read, 1 = write)."""
        self.limits_disabled = 0

    def pending(self, is_write: bool) -> int:
        return len(self.queues[is_write])

    def __repr__(self) -> str:
        return f"Member({self.name!r})"


class ThrottleGroup:
    """Members sharing one set of limits. All methods must be called holding :attr:`cond`."""

    def __init__(self, name: str, limits: ThrottleLimits | None = None,
                 clock: WaitClock | None = None) -> None:
        self.name = name
        self.clock: WaitClock = clock if clock is not None else RealClock()
        self.cond = threading.Condition()
        self.limits = limits if limits is not None else ThrottleLimits()
        self.state: ThrottleState = self.limits.to_state(self.now())
        self.members: list[Member] = []
        self.tokens: list[Member | None] = [None, None]
        self.any_timer_armed = [False, False]

    def now(self) -> int:
        """The clock's time in ns."""
        return round(self.clock.monotonic() * NS)

    # ------------------------------------------------------------ membership
    def join(self, name: str) -> Member:
        m = Member(self, name)
        self.members.append(m)
        for d in (0, 1):
            if self.tokens[d] is None:
                self.tokens[d] = m
        return m

    def leave(self, m: Member) -> None:
        """Unregister (QEMU asserts nothing is queued; the rig drains first)."""
        for d in (0, 1):
            if m.timers[d] is not None:
                m.timers[d] = None
                self.any_timer_armed[d] = False
        idx = self.members.index(m)
        self.members.remove(m)
        for d in (0, 1):
            if self.tokens[d] is m:
                self.tokens[d] = self.members[idx % len(self.members)] if self.members else None

    def _next_member(self, m: Member) -> Member:
        return self.members[(self.members.index(m) + 1) % len(self.members)]

    # --------------------------------------------------------------- limits
    def set_limits(self, limits: ThrottleLimits, now: int) -> None:
        """QEMU's throttle_group_config for every member: new config, levels reset to 0, and
        pending timers fire now (queued requests are re-scheduled under the new limits)."""
        self.limits = limits
        self.state = limits.to_state(now)
        for m in list(self.members):
            self.restart_member(m, now)
        self._notify()

    def restart_member(self, m: Member, now: int) -> None:
        """``throttle_group_restart_tgm``: fire the member's pending timers, else restart."""
        for w in (False, True):
            if m.timers[w] is not None:
                m.timers[w] = None
                self._timer_cb(m, w, now)
            else:
                self._restart_queue(m, w, now)

    def drain_begin(self, m: Member, now: int) -> None:
        m.limits_disabled += 1
        if m.limits_disabled == 1:
            self.restart_member(m, now)
            self._notify()

    def drain_end(self, m: Member) -> None:
        m.limits_disabled -= 1

    # ---------------------------------------------------------- the request
    def intercept(self, m: Member, is_write: bool, size: int, now: int) -> Ticket | None:
        """A request of ``size`` bytes arrives: None if it may run now (accounted), else a
        Ticket that will be granted later."""
        if m.limits_disabled and not m.queues[is_write]:
            # QEMU holds new requests above a drained node (blk_wait_while_drained); the rig
            # lets them through unthrottled rather than queue them behind other members.
            self.state = account(self.state, is_write, size)
            return None
        token = self._next_token(m, is_write)
        must_wait = self._schedule_timer(token, is_write, now)
        if must_wait or m.queues[is_write]:
            ticket = Ticket(size)
            m.queues[is_write].append(ticket)
            self._notify()
            return ticket
        self.state = account(self.state, is_write, size)
        self._schedule_next(m, is_write, now)
        return None

    def _next_token(self, m: Member, w: bool) -> Member:
        if m.queues[w] and m.limits_disabled:
            return m
        start = token = self.tokens[w] or m
        if start not in self.members:
            start = token = m
        token = self._next_member(token)
        while token is not start and not token.queues[w]:
            token = self._next_member(token)
        if token is start and not token.queues[w]:
            token = m
        return token

    def _schedule_timer(self, token: Member, w: bool, now: int) -> bool:
        if token.limits_disabled:
            return False
        if self.any_timer_armed[w]:
            return True
        self.state, wait = compute_timer(self.state, w, now)
        if not wait:
            return False
        if token.timers[w] is None:
            token.timers[w] = now + wait
            self._notify()  # waiters blocked without a deadline must learn about this one
        self.tokens[w] = token
        self.any_timer_armed[w] = True
        return True

    def _schedule_next(self, m: Member, w: bool, now: int) -> None:
        """``schedule_next_request``, called by a request that is about to run. A member that
        needs no wait is restarted at once (the current member first, as QEMU prefers it)."""
        while True:
            token = self._next_token(m, w)
            if not token.queues[w]:
                return
            if self._schedule_timer(token, w, now):
                return
            runner = m if m.queues[w] else token
            self.tokens[w] = runner
            self._grant(runner, w, now)
            m = runner

    def _grant(self, m: Member, w: bool, now: int) -> None:
        """Wake the first queued request of ``m``: it is accounted and runs."""
        ticket = m.queues[w].popleft()
        self.state = account(self.state, w, ticket.size)
        ticket.granted = True
        ticket.granted_at = now
        self._notify()

    def _restart_queue(self, m: Member, w: bool, now: int) -> None:
        """``throttle_group_restart_queue_entry``: wake one request (which then schedules the
        next), or schedule the next if the queue is empty."""
        if m.queues[w]:
            self._grant(m, w, now)
        self._schedule_next(m, w, now)

    def _timer_cb(self, m: Member, w: bool, now: int) -> None:
        self.any_timer_armed[w] = False
        self._restart_queue(m, w, now)

    # --------------------------------------------------------------- timers
    def next_deadline(self) -> int | None:
        """The earliest armed timer (ns), or None."""
        deadlines = [t for m in self.members for t in m.timers if t is not None]
        return min(deadlines) if deadlines else None

    def fire_due(self, now: int) -> bool:
        """Fire every timer due at ``now``, earliest first; True if any fired."""
        fired = False
        while True:
            due = [(t, i, w) for i, m in enumerate(self.members)
                   for w, t in enumerate(m.timers) if t is not None and t <= now]
            if not due:
                return fired
            _, i, w = min(due)
            m = self.members[i]
            m.timers[w] = None
            self._timer_cb(m, bool(w), now)
            fired = True

    def _notify(self) -> None:
        self.cond.notify_all()
        self.clock.kick()

    # ------------------------------------------------------- blocking helper
    def wait_granted(self, ticket: Ticket) -> None:
        """Block (holding :attr:`cond`) until ``ticket`` is granted, firing due timers."""
        while True:
            now = self.now()
            self.fire_due(now)
            if ticket.granted:
                return
            deadline = self.next_deadline()
            timeout = None if deadline is None else max(deadline - now, 0) / NS
            self.clock.wait(self.cond, timeout)


class GroupRegistry:
    """Throttle groups by id (QEMU's ``-object throttle-group,id=...``)."""

    def __init__(self) -> None:
        self._groups: dict[str, ThrottleGroup] = {}
        self._lock = threading.Lock()

    def create(self, name: str, limits: ThrottleLimits | None = None,
               clock: WaitClock | None = None) -> ThrottleGroup:
        with self._lock:
            if name in self._groups:
                raise ConfigError(f"attempt to add duplicate property '{name}' to object "
                                  "(type 'container')")
            group = ThrottleGroup(name, limits, clock)
            self._groups[name] = group
            return group

    def get(self, name: str) -> ThrottleGroup:
        with self._lock:
            group = self._groups.get(name)
        if group is None:
            raise ConfigError(f"Throttle group '{name}' does not exist")
        return group

    def get_or_create(self, name: str, limits: ThrottleLimits,
                      clock: WaitClock | None = None) -> ThrottleGroup:
        """``-drive throttling.group=NAME``: join NAME, creating it with ``limits``."""
        with self._lock:
            group = self._groups.get(name)
            if group is None:
                group = self._groups[name] = ThrottleGroup(name, limits, clock)
            return group

    def remove(self, name: str) -> None:
        with self._lock:
            self._groups.pop(name, None)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._groups)


#: The process-wide registry (``rig io --object throttle-group,...`` adds here).
GROUPS = GroupRegistry()
