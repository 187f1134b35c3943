"""The leaky bucket "as a meter" (QEMU util/throttle.c), as pure functions.

Six buckets (bps and ops; total, read, write). A bucket has a rate ``avg`` (units/s, 0 =
unlimited), a burst rate ``max`` (0 = none) and ``burst_length`` (s); its ``level`` (and
``burst_level``) rise by what is accounted and leak at ``avg`` (``max``) per second. Times are
integer nanoseconds, levels floats, as in QEMU. Nothing here reads a clock: every function takes
``now`` or a delta, and returns a new state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum

NS = 1_000_000_000


class BucketType(IntEnum):
    """QEMU's BucketType order."""

    BPS_TOTAL = 0
    BPS_READ = 1
    BPS_WRITE = 2
    OPS_TOTAL = 3
    OPS_READ = 4
    OPS_WRITE = 5


#: Buckets a request of each direction (False = read, True = write) is checked against.
CHECKED: dict[bool, tuple[BucketType, ...]] = {
    False: (BucketType.BPS_TOTAL, BucketType.OPS_TOTAL, BucketType.BPS_READ, BucketType.OPS_READ),
    True: (BucketType.BPS_TOTAL, BucketType.OPS_TOTAL, BucketType.BPS_WRITE,
           BucketType.OPS_WRITE),
}
_SIZE_BUCKETS = {False: (BucketType.BPS_TOTAL, BucketType.BPS_READ),
                 True: (BucketType.BPS_TOTAL, BucketType.BPS_WRITE)}
_UNIT_BUCKETS = {False: (BucketType.OPS_TOTAL, BucketType.OPS_READ),
                 True: (BucketType.OPS_TOTAL, BucketType.OPS_WRITE)}


@dataclass(frozen=True)
class Bucket:
    """One LeakyBucket: configuration and runtime levels."""

    avg: int = 0
    max: int = 0
    burst_length: int = 1
    level: float = 0.0
    burst_level: float = 0.0


def leak(b: Bucket, delta_ns: int) -> Bucket:
    """``throttle_leak_bucket``: drain ``delta_ns`` worth of the bucket."""
    level = max(b.level - b.avg * delta_ns / NS, 0.0)
    burst_level = b.burst_level
    if b.burst_length > 1:
        burst_level = max(burst_level - b.max * delta_ns / NS, 0.0)
    return replace(b, level=level, burst_level=burst_level)


def bucket_sizes(b: Bucket) -> tuple[float, float]:
    """``(bucket_size, burst_bucket_size)``: how full the bucket may be before requests wait."""
    if b.max == 0:
        return b.avg / 10, 0.0
    return float(b.max * b.burst_length), b.max / 10


def compute_wait(b: Bucket) -> int:
    """``throttle_compute_wait``: ns until the bucket is no longer over its size (0: none)."""
    if b.avg == 0:
        return 0
    size, burst_size = bucket_sizes(b)
    extra = b.level - size
    if extra > 0:
        return int(extra * NS / b.avg)
    if b.burst_length > 1:
        extra = b.burst_level - burst_size
        if extra > 0:
            return int(extra * NS / b.max)
    return 0


def add(b: Bucket, amount: float) -> Bucket:
    """Account ``amount`` units to the bucket (and its burst level when bursts are on)."""
    burst = b.burst_level + amount if b.burst_length > 1 else b.burst_level
    return replace(b, level=b.level + amount, burst_level=burst)


def units_of(size: int, op_size: int) -> float:
    """How many operations a request of ``size`` bytes counts as (``iops-size``)."""
    return size / op_size if op_size and size > op_size else 1.0


@dataclass(frozen=True)
class ThrottleState:
    """QEMU's ThrottleState: six buckets, ``op_size`` and the time of the last leak."""

    buckets: tuple[Bucket, ...] = (Bucket(),) * 6
    op_size: int = 0
    previous_leak: int = 0

    @property
    def enabled(self) -> bool:
        """Any bucket limited (``throttle_enabled``)."""
        return any(b.avg for b in self.buckets)


def do_leak(s: ThrottleState, now: int) -> ThrottleState:
    """``throttle_do_leak``: leak every bucket up to ``now`` (ns)."""
    delta = now - s.previous_leak
    if delta <= 0:
        return s
    return replace(s, previous_leak=now, buckets=tuple(leak(b, delta) for b in s.buckets))


def wait_for(s: ThrottleState, is_write: bool) -> int:
    """``throttle_compute_wait_for``: the largest wait over the request's four buckets."""
    return max(compute_wait(s.buckets[t]) for t in CHECKED[is_write])


def compute_timer(s: ThrottleState, is_write: bool, now: int) -> tuple[ThrottleState, int]:
    """``throttle_compute_timer``: leak to ``now``; the wait (ns, 0 = go) for a request."""
    s = do_leak(s, now)
    return s, wait_for(s, is_write)


def account(s: ThrottleState, is_write: bool, size: int) -> ThrottleState:
    """``throttle_account``: an admitted request adds ``size`` bytes and its units."""
    units = units_of(size, s.op_size)
    buckets = list(s.buckets)
    for t in _SIZE_BUCKETS[is_write]:
        buckets[t] = add(buckets[t], size)
    for t in _UNIT_BUCKETS[is_write]:
        buckets[t] = add(buckets[t], units)
    return replace(s, buckets=tuple(buckets))
