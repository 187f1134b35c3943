"""Property tests in virtual time (rig.throttle.sim): hypothesis-generated limits and request
streams, one to three members in one group.

* Over any window, what the limited bucket admitted is at most ``avg x window + bucket size +
  overshoot`` (check-before-account admits a request while the bucket is not over its size; a
  timer armed for one direction may fire after the other direction filled the total bucket, so
  two requests can overshoot), and with a burst rate, at most ``max x window + max/10 + 2``
  requests' worth.
* From idle with a backlog, the burst is there as QEMU defines it: requests go at ``max`` per
  second until ``max x burst_length`` is used up.
* Every request is admitted (no starvation, also in a group); no limits means no delay.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from rig.throttle.bucket import NS, units_of
from rig.throttle.limits import BUCKET_NAMES, ThrottleLimits
from rig.throttle.sim import Stream, simulate

SIZES = st.integers(1, 64).map(lambda n: n * 512)


@dataclass
class Case:
    name: str  # the limited bucket, e.g. "bps-read"
    limits: ThrottleLimits


@st.composite
def cases(draw: st.DrawFn) -> Case:
    name = draw(st.sampled_from(BUCKET_NAMES))
    bps = name.startswith("bps")
    avg = draw(st.integers(64 << 10, 4 << 20) if bps else st.integers(5, 500))
    values = {name: avg}
    if draw(st.booleans()):
        values[f"{name}-max"] = avg * draw(st.integers(1, 8))
        values[f"{name}-max-length"] = draw(st.integers(1, 4))
        if values[f"{name}-max-length"] > 1 and values[f"{name}-max"] == avg:
            values[f"{name}-max"] = avg * 2
    if not bps and draw(st.booleans()):
        values["iops-size"] = draw(st.sampled_from([512, 4096, 16384]))
    return Case(name, ThrottleLimits.from_mapping(values))


def streams_strategy(max_streams: int = 3) -> st.SearchStrategy[list[Stream]]:
    stream = st.builds(
        Stream,
        st.lists(st.tuples(st.booleans(), SIZES), min_size=1, max_size=25),
        st.sampled_from([1, 2, 4, 1 << 30]),
        st.integers(0, 3).map(lambda n: n * NS // 4),
    )
    return st.lists(stream, min_size=1, max_size=max_streams)


def counted(case: Case, is_write: bool, size: int) -> float:
    """What a request adds to the case's limited bucket."""
    direction = case.name.split("-")[1]
    if direction != "total" and (direction == "write") != is_write:
        return 0.0
    return float(size) if case.name.startswith("bps") else units_of(size, case.limits.iops_size)


def admissions(case: Case, streams: list[Stream]) -> list[tuple[int, float]]:
    out = [(t, counted(case, w, size)) for s in streams
           for t, (w, size) in zip(s.admitted, s.requests, strict=True)]
    return sorted(out)


def max_in_window(events: list[tuple[int, float]], rate: float, allowance: float) -> float:
    """The largest ``amount(window) - rate x window - allowance`` over all windows."""
    worst = -1e300
    for i, (t0, _) in enumerate(events):
        total = 0.0
        for t1, amount in events[i:]:
            total += amount
            worst = max(worst, total - rate * (t1 - t0) / NS - allowance)
    return worst


@settings(max_examples=80, deadline=None)
@given(cases(), streams_strategy())
def test_window_never_exceeds_limit_plus_allowance(case: Case, streams: list[Stream]) -> None:
    simulate(case.limits, streams)
    assert all(t >= s.start_ns for s in streams for t in s.admitted), "not admitted"
    events = admissions(case, streams)
    biggest = max((a for _, a in events), default=0.0)
    i = BUCKET_NAMES.index(case.name)
    bucket = case.limits.to_state(0).buckets[i]
    size = bucket.avg / 10 if not bucket.max else bucket.max * bucket.burst_length
    slack = 1e-6 * max(bucket.avg, 1)
    assert max_in_window(events, bucket.avg, size + 2 * biggest) <= slack
    if bucket.max and bucket.burst_length > 1:
        assert max_in_window(events, bucket.max, bucket.max / 10 + 2 * biggest) <= slack


@settings(max_examples=100, deadline=None)
@given(st.integers(5, 200), st.integers(2, 8), st.integers(2, 4), st.integers(20, 300))
def test_burst_is_available_as_qemu_defines_it(avg: int, factor: int, length: int,
                                               n: int) -> None:
    """From idle, a backlog of one-op requests is served at ``max`` per second for as long as
    the bucket (``max x burst_length``) lasts, then at ``avg``. (With ``burst_length`` 1, QEMU
    uses ``max`` only as the bucket size: no burst rate, checked by the window test.)"""
    mx = avg * factor
    limits = ThrottleLimits.of(iops_write=avg, iops_write_max=mx, iops_write_max_length=length)
    s = Stream([(True, 512)] * n)
    simulate(limits, [s])
    # The level grows at (max - avg) per second from max/10: the bucket is full at burst_end.
    burst_end = (mx * length - mx / 10) / (mx - avg)
    for k, t in enumerate(s.admitted):
        seconds = t / NS
        if (k - mx / 10) / mx + 1 / mx < burst_end:
            # the k-th admission (k from 0) comes no later than the burst rate allows ...
            assert seconds <= max(0.0, (k - mx / 10) / mx) + 1e-6, (k, seconds)
        # ... and never earlier than the burst rate allows
        assert seconds >= (k - mx / 10 - 1) / mx - 1e-6, (k, seconds)
    if n > mx * length + mx:
        # afterwards the average rate holds: ops up to time t <= avg*t + bucket + 1
        last = s.admitted[-1] / NS
        assert n <= avg * last + mx * length + 1 + 1e-6


@settings(max_examples=100, deadline=None)
@given(streams_strategy())
def test_no_limits_no_delay(streams: list[Stream]) -> None:
    for s in streams:
        s.depth = 1
    simulate(ThrottleLimits(), streams, service_ns=1000)
    for s in streams:
        assert s.admitted == [s.start_ns + 1000 * k for k in range(len(s.requests))]


@settings(max_examples=60, deadline=None)
@given(cases(), st.integers(2, 3), st.integers(5, 30))
def test_group_members_are_served_round_robin(case: Case, members: int, n: int) -> None:
    """Members with equal backlogs all complete, and once requests wait (after what the bucket
    let through at time 0), they are served round-robin: no member is served twice in a row
    while another one has a request waiting."""
    write = not case.name.endswith("read")
    streams = [Stream([(write, 4096)] * n) for _ in range(members)]
    simulate(case.limits, streams)
    assert all(t >= 0 for s in streams for t in s.admitted)
    events = sorted((t, k, i) for i, s in enumerate(streams) for k, t in enumerate(s.admitted))
    remaining = [n] * members
    previous = -1
    for t, _, i in events:
        if t > 0 and i == previous:
            others = [r for j, r in enumerate(remaining) if j != i]
            assert not any(others), (t, i, remaining)
        remaining[i] -= 1
        previous = i if t > 0 else -1


@settings(max_examples=60, deadline=None)
@given(cases(), cases(), st.integers(0, 3 * NS), streams_strategy())
def test_limits_changed_while_io_runs(first: Case, second: Case, at: int,
                                      streams: list[Stream]) -> None:
    """Limits replaced mid-run: every request still completes, and from the change on the
    new limit's window bound holds (levels restart at 0, as QEMU's throttle_config does)."""
    simulate(first.limits, streams, changes=[(at, second.limits)])
    assert all(t >= 0 for s in streams for t in s.admitted)
    events = [(t, a) for t, a in admissions(second, streams) if t > at]
    biggest = max((a for _, a in events), default=0.0)
    bucket = second.limits.to_state(0).buckets[BUCKET_NAMES.index(second.name)]
    size = bucket.avg / 10 if not bucket.max else bucket.max * bucket.burst_length
    # requests that were queued at the change may all be released at once up to the bucket
    assert max_in_window(events, bucket.avg, size + 2 * biggest) <= 1e-6 * max(bucket.avg, 1)
