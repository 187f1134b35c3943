"""The ``rig_throttled`` fixture: a throttled device, exact under a virtual clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from rig.core.backend import BlockBackend
from rig.testing.clock import VirtualClock
from rig.throttle.group import GROUPS


def test_iops_limit_under_a_virtual_clock(rig_throttled: Callable[..., BlockBackend]) -> None:
    clock = VirtualClock()
    blk = rig_throttled({"iops-total": 10}, clock=clock)
    start_virtual, start_real = clock.monotonic(), time.monotonic()
    for i in range(21):
        blk.pread(i * 512, 512)
    elapsed = clock.monotonic() - start_virtual
    # 10 ops/s: the bucket holds avg/10 = 1 op, so after the first request each waits 0.1 s.
    assert elapsed == pytest.approx(2.0, abs=0.11)
    assert time.monotonic() - start_real < 1.0  # virtual time: no real sleeping


@pytest.mark.rig_needs("loop")
def test_throttled_loop_device_and_cleanup(rig_throttled: Callable[..., BlockBackend]) -> None:
    before = set(GROUPS.names())
    blk = rig_throttled({"bps-write": 1 << 20}, on="loop", size="4M")
    blk.pwrite(0, b"x" * 4096)
    assert blk.pread(0, 4096) == b"x" * 4096
    assert len(set(GROUPS.names()) - before) == 1


def test_bad_limits_are_refused(rig_throttled: Callable[..., Any]) -> None:
    from rig.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be used at the same time"):
        rig_throttled({"bps-total": 1000, "bps-read": 10})
