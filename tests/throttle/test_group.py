"""The group scheduler in virtual time: the reference's measured cases exactly, qemu-iotests
093's fairness check, limits changed while requests wait, drain."""

from __future__ import annotations

import pytest

from rig.errors import ConfigError
from rig.testing.clock import VirtualClock
from rig.throttle.bucket import NS
from rig.throttle.group import GroupRegistry, ThrottleGroup
from rig.throttle.limits import ThrottleLimits
from rig.throttle.sim import Stream, simulate

L = ThrottleLimits.of
KIB = 1024
MIB = 1 << 20


def starts(limits: ThrottleLimits, requests: list[tuple[bool, int]]) -> list[float]:
    s = Stream(requests)
    simulate(limits, [s])
    return [round(t / NS, 6) for t in s.admitted]


def test_reference_bps_case() -> None:
    got = starts(L(bps_total=MIB), [(True, 256 * KIB)] * 16)
    assert got == [0.0, 0.15, *[round(0.15 + 0.25 * k, 6) for k in range(1, 15)]]
    assert got[-1] == 3.65


def test_reference_iops_case() -> None:
    assert starts(L(iops_total=10), [(True, 4096)] * 20) == \
        [0.0, 0.0, *[round(0.1 * k, 6) for k in range(1, 19)]]


def test_reference_iops_size_case() -> None:
    assert starts(L(iops_total=10, iops_size=4096), [(True, 16 * KIB)] * 5) == \
        [0.0, 0.3, 0.7, 1.1, 1.5]


def test_reference_burst_case() -> None:
    got = starts(L(bps_total=MIB, bps_total_max=4 * MIB, bps_total_max_length=2),
                 [(True, MIB)] * 12)
    assert got == [0.0, 0.15, *[round(0.15 + 0.25 * k, 6) for k in range(1, 10)], 3.0]


@pytest.mark.parametrize("ndrives", [1, 2, 3])
@pytest.mark.parametrize("param", ["bps-total", "bps-read", "bps-write", "iops-total",
                                   "iops-read", "iops-write"])
def test_iotests_093_all(ndrives: int, param: str) -> None:
    """093's do_test_throttle: 2x what the limit allows, 512-byte reads and writes per drive;
    over 5 s each drive gets limit/ndrives within +-10 %."""
    seconds = 5
    base = 4096 if param.startswith("bps") else 10
    limit = base * ndrives
    limits = ThrottleLimits.from_mapping({param: limit})
    per = {"bps-total": limit // 512 // 2, "bps-read": limit // 512, "bps-write": limit // 512,
           "iops-total": limit // 2, "iops-read": limit, "iops-write": limit}[param]
    n = per * seconds * 2 // ndrives
    streams = [Stream([(False, 512)] * n + [(True, 512)] * n) for _ in range(ndrives)]
    # reads and writes are independent queues: interleave them as 093 submits them all at once
    for s in streams:
        s.requests = [r for pair in zip(s.requests[:n], s.requests[n:], strict=True) for r in pair]
    simulate(limits, streams)
    window = (NS * seconds // 2, NS * seconds // 2 + seconds * NS)
    for s in streams:
        done = [(w, size) for t, (w, size) in zip(s.admitted, s.requests, strict=True)
                if window[0] <= t < window[1]]
        kind = param.split("-")[1]
        counted = [size for w, size in done if kind == "total" or (kind == "write") == w]
        amount = sum(counted) if param.startswith("bps") else len(counted)
        expect = seconds * limit / ndrives
        assert 0.9 * expect < amount < 1.1 * expect, (amount, expect)


def test_set_limits_while_requests_wait() -> None:
    """QEMU's throttle_group_config: levels reset, the pending timer fires now, and the queued
    requests go on under the new limits."""
    g = ThrottleGroup("g", L(iops_write=1), VirtualClock())
    m = g.join("a")
    with g.cond:
        assert g.intercept(m, True, 512, 0) is None
        waiting = [g.intercept(m, True, 512, 0) for _ in range(15)]
        assert all(t is not None and not t.granted for t in waiting)
        assert g.next_deadline() == int(0.9 * NS)  # level 1, bucket 0.1 op, 1 op/s
        g.set_limits(L(iops_write=100), NS // 10)
        # bucket 10 ops: levels 0..10 pass the check, the 12th waits for 1 op at 100/s
        granted = [t.granted_at for t in waiting if t and t.granted]
        assert granted == [NS // 10] * 11
        assert g.next_deadline() == NS // 10 + NS // 100
        g.fire_due(NS)
        assert all(t is not None and t.granted for t in waiting)


def test_removing_limits_releases_everything() -> None:
    g = ThrottleGroup("g", L(bps_read=4096), VirtualClock())
    m = g.join("a")
    with g.cond:
        assert g.intercept(m, False, 4096, 0) is None
        queued = [g.intercept(m, False, 4096, 0) for _ in range(2)]
        g.set_limits(ThrottleLimits(), 1)
        assert all(t is not None and t.granted_at == 1 for t in queued)
        assert g.next_deadline() is None


def test_drain_lifts_only_the_draining_members_limits() -> None:
    g = ThrottleGroup("g", L(iops_total=1), VirtualClock())
    a, b = g.join("a"), g.join("b")
    with g.cond:
        assert g.intercept(a, True, 512, 0) is None
        qa = [g.intercept(a, True, 512, 0) for _ in range(3)]
        qb = [g.intercept(b, True, 512, 0) for _ in range(2)]
        g.drain_begin(a, 5)
        assert all(t is not None and t.granted_at == 5 for t in qa)
        assert all(t is not None and not t.granted for t in qb)
        assert g.intercept(a, True, 512, 6) is None  # limits stay lifted while draining
        g.drain_end(a)
        g.fire_due(100 * NS)
        assert all(t is not None and t.granted for t in qb)


def test_registry() -> None:
    reg = GroupRegistry()
    g = reg.create("tg0", L(bps_total=1))
    assert reg.get("tg0") is g
    assert reg.get_or_create("tg0", L(bps_total=2)) is g
    with pytest.raises(ConfigError, match="Throttle group 'nope' does not exist"):
        reg.get("nope")
    with pytest.raises(ConfigError, match="duplicate"):
        reg.create("tg0")
    reg.remove("tg0")
    assert reg.names() == []
