"""QEMU's block-job rate limit (include/qemu/ratelimit.h), as pure arithmetic on nanoseconds.

Time is cut into slices of 100 ms; a slice may carry ``quota = max(speed * 0.1, 1)`` bytes.
Dispatching ``n`` bytes adds to the slice's count; below the quota there is no delay. At or over
it, the slice is stretched to ``start + (dispatched / quota) * slice`` and the caller waits until
then. A slice that has ended resets the count. ``speed == 0`` means no limit.

So one 512 KiB chunk at 512 KiB/s waits 1 s, and 2 MiB of copied chunks take 3 s (the first
chunk goes at once), which is what QEMU 7.2 measures.
"""

from __future__ import annotations

from dataclasses import dataclass

SLICE_NS = 100_000_000


@dataclass
class RateLimit:
    """State of one limiter. ``delay(n, now_ns)`` is the only thing a job calls."""

    speed: int = 0
    slice_ns: int = SLICE_NS
    slice_quota: int = 0
    slice_start_ns: int = 0
    slice_end_ns: int = -1
    """Before any dispatch: -1, so the first one starts a slice whatever the clock says."""
    dispatched: int = 0

    def __post_init__(self) -> None:
        self.set_speed(self.speed)

    def set_speed(self, speed: int) -> None:
        """Bytes per second; 0 turns the limit off. Negative speeds are the caller's error."""
        if speed < 0:
            raise ValueError(f"speed must be non-negative, got {speed}")
        self.speed = speed
        self.slice_quota = 0 if speed == 0 else max(int(speed * self.slice_ns / 1e9), 1)

    def delay(self, n: int, now_ns: int) -> int:
        """Account ``n`` dispatched bytes at ``now_ns``; nanoseconds to wait before the next."""
        if not self.slice_quota:
            return 0
        if self.slice_end_ns < now_ns:
            self.slice_start_ns = now_ns
            self.slice_end_ns = now_ns + self.slice_ns
            self.dispatched = 0
        self.dispatched += n
        if self.dispatched < self.slice_quota:
            return 0
        slices = self.dispatched / self.slice_quota
        self.slice_end_ns = self.slice_start_ns + int(slices * self.slice_ns)
        return self.slice_end_ns - now_ns
