"""The ``throttle`` filter: QEMU's block/throttle.c over a throttle group.

Graph form (QEMU's)::

    --object throttle-group,id=tg0,x-bps-total=1048576
    --image-opts driver=throttle,throttle-group=tg0,file.driver=file,file.filename=disk.raw

or, a rig extension, limits inline: ``driver=throttle,throttling.bps-total=1048576`` (a private
group, or the group named by ``throttling.group``, created with these limits if new); ``limits.*``
is accepted as a synonym of ``throttling.*``. From Python, ``node.group.set_limits(...)`` changes
limits while I/O runs (levels reset, pending timers fire now, as block_set_io_throttle).

As in QEMU: reads are throttled as reads; writes, write-zeroes and discards as writes; flush and
everything else pass through. While the graph drains (``BlockBackend.drain``) the node's limits
are lifted and its queued requests run at once.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from rig.core.node import Iov, Node, ReqFlags
from rig.core.registry import register_driver
from rig.errors import ConfigError
from rig.filters.base import Filter
from rig.throttle.group import GROUPS, Member, ThrottleGroup
from rig.throttle.limits import ThrottleLimits

if TYPE_CHECKING:
    from rig.core.graph import OpenContext
    from rig.core.options import Options

_anon = itertools.count()


@register_driver("throttle")
class ThrottleFilter(Filter):
    """Requests wait for their group's leaky buckets, then go to the child."""

    def __init__(self, *, group: ThrottleGroup, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.group = group
        with group.cond:
            self.member: Member = group.join(self.node_name or f"throttle{next(_anon)}")

    @classmethod
    def from_options(cls, opts: Options, ctx: OpenContext) -> Node:
        name = opts.str("throttle-group")
        inline: dict[str, Any] = {}
        for key in list(opts.keys()):
            for prefix in ("throttling.", "limits."):
                if key.startswith(prefix) and key != "throttling.group":
                    inline[key[len(prefix):]] = opts.raw(key)
        inline_group = opts.str("throttling.group")
        if name is not None and (inline or inline_group is not None):
            raise ConfigError(f"Parameter '{opts.path}throttle-group' cannot be combined with "
                              "inline throttling.* limits")
        if name is not None:
            group = GROUPS.get(name)
        elif inline or inline_group is not None:
            limits = ThrottleLimits.from_mapping(inline, "throttling.")
            if inline_group is not None:
                group = GROUPS.get_or_create(inline_group, limits)
            else:
                group = ThrottleGroup(f"#anon{next(_anon)}", limits)
        else:
            raise ConfigError("Please specify a throttle group")
        return cls(group=group, **ctx.node_kwargs()).open_child(ctx)

    def _throttle(self, is_write: bool, size: int) -> None:
        group = self.group
        with group.cond:
            ticket = group.intercept(self.member, is_write, size, group.now())
            if ticket is not None:
                group.wait_granted(ticket)

    def _preadv(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        # The chokepoint's read-modify-write reads are part of a write that was throttled.
        if not flags & ReqFlags.PADDING:
            self._throttle(False, length)
        self.child.preadv(offset, length, iov, flags)

    def _pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        self._throttle(True, length)
        self.child.pwritev(offset, length, iov, flags)

    def _write_zeroes(self, offset: int, length: int, flags: ReqFlags) -> None:
        self._throttle(True, length)
        self.child.write_zeroes(offset, length, flags)

    def _discard(self, offset: int, length: int) -> None:
        self._throttle(True, length)
        self.child.discard(offset, length)

    def drain_begin(self) -> None:
        with self.group.cond:
            self.group.drain_begin(self.member, self.group.now())
        super().drain_begin()

    def drain_end(self) -> None:
        super().drain_end()
        with self.group.cond:
            self.group.drain_end(self.member)

    def _close(self) -> None:
        with self.group.cond:
            self.group.drain_begin(self.member, self.group.now())
            self.group.leave(self.member)
