"""The bucket math against QEMU's own unit-test anchors (tests/unit/test-throttle.c)."""

from __future__ import annotations

import pytest

from rig.throttle.bucket import (
    NS,
    Bucket,
    ThrottleState,
    account,
    add,
    compute_wait,
    do_leak,
    leak,
    units_of,
    wait_for,
)
from rig.throttle.limits import ThrottleLimits


def test_leak_anchor() -> None:
    b = leak(Bucket(avg=150, level=1.5), NS // 150)
    assert b.level == pytest.approx(0.5)


def test_leak_never_below_zero_and_burst_leaks_at_max() -> None:
    b = leak(Bucket(avg=10, max=100, burst_length=2, level=1, burst_level=50), NS)
    assert b.level == 0 and b.burst_level == 0
    b = leak(Bucket(avg=10, max=100, burst_length=2, level=30, burst_level=50), NS // 10)
    assert b.level == pytest.approx(29) and b.burst_level == pytest.approx(40)


def test_wait_anchor() -> None:
    # avg=150, max=15 is what the QEMU test sets (a bucket of max*burst_length = 15 units).
    assert compute_wait(Bucket(avg=150, max=15, level=15.5)) == int(NS / 150 / 2)


def test_wait_without_max_uses_a_tenth_of_avg() -> None:
    assert compute_wait(Bucket(avg=100, level=10)) == 0
    assert compute_wait(Bucket(avg=100, level=11)) == NS // 100
    assert compute_wait(Bucket(avg=0, level=1e9)) == 0


def test_burst_anchor() -> None:
    """avg=10, max=200, burst_length=2; add max/10 units then leak 0.1 s, 22 times: no wait for
    21 steps (2 s of burst plus what leaked meanwhile), then 1.8 s."""
    b = Bucket(avg=10, max=200, burst_length=2)
    for i in range(22):
        b = leak(add(b, 20), NS // 10)
        assert b.burst_level == pytest.approx(0)
        assert b.level == pytest.approx((i + 1) * 19)
        assert compute_wait(b) == (0 if i < 21 else pytest.approx(1.8 * NS, abs=2))


def test_burst_rate_is_capped_by_the_burst_bucket() -> None:
    # One tenth of a second's burst (max/10) may be outstanding; above that, wait at max rate.
    b = Bucket(avg=10, max=200, burst_length=2, level=0, burst_level=30)
    assert compute_wait(b) == int(10 * NS / 200)


def test_iops_size_accounting_anchor() -> None:
    assert units_of(64 * 512, 13 * 512) == pytest.approx(64 / 13)
    assert units_of(512, 4096) == 1.0
    assert units_of(8192, 0) == 1.0
    s = ThrottleLimits.of(iops_total=10, iops_size=13 * 512).to_state(0)
    s = account(s, True, 64 * 512)
    assert s.buckets[3].level == pytest.approx(64 / 13)  # OPS_TOTAL
    assert s.buckets[5].level == pytest.approx(64 / 13)  # OPS_WRITE
    assert s.buckets[0].level == 64 * 512 and s.buckets[2].level == 64 * 512
    assert s.buckets[1].level == 0 and s.buckets[4].level == 0


def test_reads_are_not_checked_against_write_buckets() -> None:
    s = ThrottleLimits.of(bps_write=100).to_state(0)
    s = account(s, True, 1000)
    assert wait_for(s, True) > 0
    assert wait_for(s, False) == 0


def test_burst_level_only_counts_with_bursts() -> None:
    assert add(Bucket(avg=1), 5).burst_level == 0
    assert add(Bucket(avg=1, max=2, burst_length=2), 5).burst_level == 5


def test_state_is_immutable_and_leak_is_monotonic() -> None:
    s = ThrottleState(previous_leak=100)
    assert do_leak(s, 50) is s
    assert do_leak(s, 200).previous_leak == 200
