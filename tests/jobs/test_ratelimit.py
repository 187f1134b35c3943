"""The block-job rate limit: QEMU's slice arithmetic, exactly, as pure functions of time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rig.jobs.ratelimit import SLICE_NS, RateLimit
from rig.testing import profiles

KiB = 1024
S = 1_000_000_000


def test_no_speed_no_delay() -> None:
    limit = RateLimit(0)
    assert [limit.delay(512 * KiB, t) for t in (0, 1, 2)] == [0, 0, 0]


def test_one_chunk_per_second_at_512k() -> None:
    """QEMU: 2 MiB at 512 KiB/s: chunks start at 0, 1, 2 and 3 s."""
    limit = RateLimit(512 * KiB)
    now = 0
    starts = []
    for _ in range(4):
        starts.append(now)
        now += limit.delay(512 * KiB, now)
    # the quota is truncated to whole bytes (52428), as in QEMU: a hair over one second each
    assert starts == pytest.approx([0, S, 2 * S, 3 * S], rel=1e-4)
    assert starts[1] == int(512 * KiB / 52428 * SLICE_NS)


def test_below_quota_goes_on() -> None:
    limit = RateLimit(10 * 1024 * KiB)  # quota 1 MiB per 100 ms slice
    assert limit.slice_quota == 1024 * KiB
    assert limit.delay(512 * KiB, 0) == 0
    assert limit.delay(512 * KiB, 10) == SLICE_NS - 10  # reaching the quota ends the slice


def test_tiny_speed_has_a_one_byte_quota() -> None:
    assert RateLimit(1).slice_quota == 1


def test_speed_change_takes_effect() -> None:
    """The slice goes on at the new quota: at 1 MiB/s the second 512 KiB fits in the first
    second already, the third waits half a second."""
    limit = RateLimit(512 * KiB)
    now = limit.delay(512 * KiB, 0)
    assert now == pytest.approx(S, rel=1e-4)
    limit.set_speed(1024 * KiB)
    now += limit.delay(512 * KiB, now)
    assert now == pytest.approx(S, rel=1e-4)
    assert limit.delay(512 * KiB, now) == pytest.approx(S // 2, rel=1e-3)
    limit.set_speed(0)
    assert limit.delay(512 * KiB, now) == 0


@given(speed=st.integers(1, 64 << 20),
       sizes=st.lists(st.integers(1, 1 << 20), min_size=1, max_size=40))
@settings(profiles.selected(), max_examples=200)
def test_rate_never_exceeds_speed(speed: int, sizes: list[int]) -> None:
    """Whoever waits as told never sends more than ``speed * elapsed`` plus one slice's quota
    and the last request (which goes before its delay). Below 10 B/s the quota's floor of one
    byte per 100 ms slice makes the real limit 10 B/s (QEMU's arithmetic, kept)."""
    limit = RateLimit(speed)
    rate = max(speed, 10)
    now = sent = 0
    for n in sizes:
        sent += n
        now += limit.delay(n, now)
        assert sent <= rate * now / S + limit.slice_quota + n + 1
