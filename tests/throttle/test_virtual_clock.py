"""VirtualClock with threads sleeping concurrently, and the Clock protocol's new home."""

from __future__ import annotations

import threading

import pytest

import rig.faults.engine as engine
from rig.core.clock import Clock, RealClock, WaitClock
from rig.testing.clock import VirtualClock, VirtualDeadlock


def test_clock_moved_but_old_names_still_import() -> None:
    assert engine.Clock is Clock and engine.RealClock is RealClock
    clocks: list[WaitClock] = [RealClock(), VirtualClock()]
    assert all(c.monotonic() >= 0 for c in clocks)


def run_participants(clock: VirtualClock, *bodies: object) -> None:
    barrier = threading.Barrier(len(bodies))

    def wrap(body: object) -> None:
        with clock.running():
            barrier.wait()
            body()  # type: ignore[operator]

    threads = [threading.Thread(target=wrap, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
        assert not t.is_alive()


def test_concurrent_sleepers_wake_in_virtual_time_order() -> None:
    clock = VirtualClock(10.0)
    woke: list[tuple[str, float]] = []

    def sleeper(name: str, steps: list[float]) -> object:
        def body() -> None:
            for s in steps:
                clock.sleep(s)
                woke.append((name, round(clock.monotonic(), 9)))
        return body

    run_participants(clock, sleeper("a", [0.3, 0.3]), sleeper("b", [0.1, 0.1, 0.1, 0.25]))
    assert woke == [("b", 10.1), ("b", 10.2), ("a", 10.3), ("b", 10.3), ("b", 10.55),
                    ("a", 10.6)] or woke == [("b", 10.1), ("b", 10.2), ("b", 10.3), ("a", 10.3),
                                             ("b", 10.55), ("a", 10.6)]
    assert clock.monotonic() == pytest.approx(10.6)


def test_wait_returns_on_kick_or_timeout() -> None:
    clock = VirtualClock()
    cond = threading.Condition()
    state = {"ready": False}
    seen: list[float] = []

    def waiter() -> None:
        with cond:
            while not state["ready"]:
                clock.wait(cond, None)
            seen.append(clock.monotonic())
            clock.wait(cond, 2.0)
            seen.append(clock.monotonic())

    def setter() -> None:
        clock.sleep(1.5)
        with cond:
            state["ready"] = True
            cond.notify_all()
        clock.kick()

    run_participants(clock, waiter, setter)
    assert seen == [1.5, 3.5]


def test_everyone_waiting_forever_is_a_deadlock() -> None:
    clock = VirtualClock()
    cond = threading.Condition()
    errors: list[BaseException] = []

    def stuck() -> None:
        try:
            with cond:
                clock.wait(cond, None)
        except VirtualDeadlock as e:
            errors.append(e)

    run_participants(clock, stuck, stuck)
    assert len(errors) == 2


def test_outside_participants_time_jumps_at_once() -> None:
    clock = VirtualClock()
    clock.sleep(5)
    cond = threading.Condition()
    with cond:
        clock.wait(cond, 1)
    assert clock.monotonic() == 6 and clock.sleeps == [5]
