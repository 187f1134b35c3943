"""The filter base class: forwards every driver hook to its one child.

A filter overrides only the driver hooks it intercepts, never a public verb (the hooks that reach
around one, :meth:`~rig.core.node.Node.debug_event` for write events and
:meth:`~rig.core.node.Node._flush` for the whole flush, are in rig/core/node.py). A filter that
changes data sets ``modifies_data = True`` and must override every data verb in
:attr:`Filter.DATA_VERBS`. tests/filters/test_filter_contract.py checks both for every registered
filter, and that each one with no rules is transparent.
"""

from __future__ import annotations

from collections.abc import Callable

from rig.core.limits import BlockLimits
from rig.core.node import BlockStatus, Iov, Node, ReqFlags
from rig.errors import StateError

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:
    from typing import ClassVar, Self

    from rig.core.graph import OpenContext
    from rig.core.options import Options


class Filter(Node):
    """A node with one child (role ``child_role``) to which everything is forwarded."""

    child_role: ClassVar[str] = "file"

    #: The data verbs a data-modifying filter must override.
    DATA_VERBS: ClassVar[tuple[str, ...]] = (
        "_preadv", "_pwritev", "_write_zeroes", "_discard", "_block_status",
    )

    @classmethod
    def from_options(cls, opts: Options, ctx: OpenContext) -> Node:
        return cls(**ctx.node_kwargs()).open_child(ctx)

    def open_child(self, ctx: OpenContext, then: Callable[[], None] | None = None) -> Self:
        """Open and attach the child from ``ctx``, then run ``then`` (the rest of this node's
        set-up); if either fails, close this node (and what it holds) before raising."""
        try:
            self.attach_child(self.child_role, ctx.open_child(self.child_role))
            if then is not None:
                then()
        except BaseException:
            self.close()
            raise
        return self

    @property
    def child(self) -> Node:
        child = self.children.get(self.child_role)
        if child is None:
            raise StateError(f"{self.driver_name or type(self).__name__} has no child")
        return child

    def refresh_limits(self) -> None:
        child = self.children.get(self.child_role)
        if child is not None:
            self.limits = self.own_limits().merged_with(child.limits)
            self.supported_write_flags = child.supported_write_flags
            self.supported_zero_flags = child.supported_zero_flags

    def own_limits(self) -> BlockLimits:
        """Limits the filter adds on top of its child's (none by default)."""
        return BlockLimits()

    def describe(self) -> str:
        return self.child.describe()

    def _preadv(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        self.child.preadv(offset, length, iov, flags)

    def _pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        self.child.pwritev(offset, length, iov, flags)

    def _write_zeroes(self, offset: int, length: int, flags: ReqFlags) -> None:
        self.child.write_zeroes(offset, length, flags)

    def _discard(self, offset: int, length: int) -> None:
        self.child.discard(offset, length)

    def _block_status(self, offset: int, length: int) -> BlockStatus:
        return self.child.block_status(offset, length)

    def _getlength(self) -> int:
        return self.child.getlength()

    def _truncate(self, length: int) -> None:
        self.child.truncate(length)
