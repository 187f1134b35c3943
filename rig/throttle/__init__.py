"""I/O throttling as QEMU does it (util/throttle.c, block/throttle-groups.c).

``bucket``: the leaky-bucket math, pure functions. ``limits``: :class:`ThrottleLimits` with QEMU's
option names and validity rules. ``group``: :class:`ThrottleGroup`, the request scheduler
(several members sharing one state, round-robin) and the registry of groups by id. ``sim``: a
single-threaded discrete-event driver of a group, for exact timings. See docs/filters/throttle.md.
"""

from rig.throttle.bucket import Bucket, ThrottleState
from rig.throttle.group import Member, ThrottleGroup, Ticket
from rig.throttle.limits import ThrottleLimits

__all__ = ["Bucket", "Member", "ThrottleGroup", "ThrottleLimits", "ThrottleState", "Ticket"]
