"""The virtual clock: sleeping advances time at once and is recorded; time never runs back."""

from __future__ import annotations

import pytest

from rig.faults.engine import Clock
from rig.testing.clock import VirtualClock


def test_sleep_advances_time_and_is_recorded() -> None:
    clock: Clock = VirtualClock(100.0)
    clock.sleep(2.5)
    assert clock.monotonic() == 102.5
    assert isinstance(clock, VirtualClock)
    clock.advance(1)
    assert clock.monotonic() == 103.5
    assert clock.sleeps == [2.5]


def test_negative_times_are_refused() -> None:
    clock = VirtualClock()
    with pytest.raises(ValueError):
        clock.sleep(-1)
    with pytest.raises(ValueError):
        clock.advance(-0.1)
