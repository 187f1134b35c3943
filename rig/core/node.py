"""The block node: one verb set for every driver, filter and format.

Two layers, as in QEMU's block/io.c:

* the **public verbs** (``preadv``, ``pwritev``, ``flush`` ...) hold the small per-node generic
  steps: the write generation counter, FUA emulation by flush, QEMU's flush sequence
  (``flush_to_os`` then ``flush_to_disk``, skipped when clean or ``no_flush``), recursion into
  children. Drivers do not override them.
* the **driver hooks** (``_preadv``, ``_pwritev``, ``_flush_to_disk`` ...) are what a driver or
  filter implements. They receive requests that the chokepoint (:mod:`rig.core.backend`) has
  already validated, aligned and split: drivers never re-validate.

Two hooks reach around a verb's generic steps, where QEMU's drivers do:

* :meth:`Node.debug_event` (QEMU's ``bdrv_debug_event`` callback) is also called *on the node
  itself* around each write, as ``bdrv_aligned_pwritev`` does: ``pwritev`` (or ``pwritev_zero``)
  before the write's steps, ``pwritev_done`` after them, also when the write failed. Only nodes
  with ``handles_events`` get the calls.
* :meth:`Node._flush` (QEMU's ``bdrv_co_flush`` callback) is the whole flush of the node and
  its children, after the read-only and no-medium checks. The default is QEMU's flush sequence;
  a filter overrides it to decide first (raise, or return without ``super()._flush()``: nothing
  at or below the node is flushed) or to act once everything below has flushed.

The contract test (tests/filters/test_filter_contract.py) holds every filter to this.

Data-path failures are ``OSError`` with the real errno.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Sequence
from enum import IntFlag

from rig.core.limits import BlockLimits

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:
    from typing import ClassVar

    from rig.core.graph import OpenContext
    from rig.core.options import Options

#: A request's data: a sequence of buffers (an iovec). Writable for reads.
Iov = Sequence[memoryview]

#: The verbs whose generic steps :class:`Node` holds and whose driver part is a ``_`` hook
#: (``preadv`` -> ``_preadv``, ``flush`` -> ``_flush`` ...): no driver or filter overrides them.
#: The removable-media verbs and ``drain_begin``/``drain_end`` have no hook and are overridden by
#: the nodes that have media or queues.
PUBLIC_VERBS: tuple[str, ...] = (
    "preadv", "pwritev", "write_zeroes", "discard", "flush", "block_status", "getlength",
    "truncate", "close",
)


class ReqFlags(IntFlag):
    """Request flags (QEMU's BdrvRequestFlags subset)."""

    NONE = 0
    FUA = 1
    """Forced unit access: the write is durable when it completes."""
    MAY_UNMAP = 2
    """write_zeroes may deallocate the range instead of writing zeroes."""
    NO_FALLBACK = 4
    """write_zeroes must fail with ENOTSUP rather than fall back to writing a zero buffer."""
    PADDING = 8
    """Internal (set only by the chokepoint): a read-modify-write read, not a guest read."""

    # enum.Flag's operators build every result through the metaclass (EnumType.__call__), which
    # costs more than the rest of a small request's trip through a node. These do what it does
    # (int operands only, the result is the member for the value) with a dictionary lookup.
    def __and__(self, other: int) -> ReqFlags:
        if not isinstance(other, int):
            return NotImplemented
        value = int.__and__(self, other)
        member = _REQ_FLAGS_BY_VALUE.get(value)
        return member if member is not None else ReqFlags(value)

    def __or__(self, other: int) -> ReqFlags:
        if not isinstance(other, int):
            return NotImplemented
        value = int.__or__(self, other)
        member = _REQ_FLAGS_BY_VALUE.get(value)
        return member if member is not None else ReqFlags(value)

    __rand__ = __and__
    __ror__ = __or__
    __bool__ = int.__bool__


#: The enum's own value -> member map; ``ReqFlags(value)`` adds the composites it creates.
_REQ_FLAGS_BY_VALUE: dict[int, ReqFlags] = ReqFlags._value2member_map_  # type: ignore[assignment]


class BlockStatus:
    """What :meth:`Node.block_status` reports for the extent ``[offset, offset+length)``.

    Immutable and compared by value, like a frozen dataclass (written out for start-up)."""

    __slots__ = ("allocated", "data", "length", "offset", "zero")

    offset: int
    length: int
    data: bool
    """Reads return stored data (as opposed to known zeroes with no data)."""
    zero: bool
    """Reads are known to return zeroes."""
    allocated: bool
    """The extent is allocated in this node (not inherited from a backing file)."""

    def __init__(self, offset: int, length: int, data: bool, zero: bool,
                 allocated: bool) -> None:
        init = object.__setattr__
        init(self, "offset", offset)
        init(self, "length", length)
        init(self, "data", data)
        init(self, "zero", zero)
        init(self, "allocated", allocated)

    def _values(self) -> tuple[int, int, bool, bool, bool]:
        return self.offset, self.length, self.data, self.zero, self.allocated

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} (BlockStatus is immutable)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} (BlockStatus is immutable)")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, BlockStatus)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __reduce__(self) -> tuple[type[BlockStatus], tuple[int, int, bool, bool, bool]]:
        return BlockStatus, self._values()

    def __repr__(self) -> str:
        return (f"BlockStatus(offset={self.offset!r}, length={self.length!r}, "
                f"data={self.data!r}, zero={self.zero!r}, allocated={self.allocated!r})")


def _enotsup(what: str) -> OSError:
    return OSError(errno.ENOTSUP, f"{what}: {errno.errorcode[errno.ENOTSUP]}")


class Node:
    """A block node. Subclasses implement the ``_``-prefixed driver hooks they support."""

    #: Set by :func:`rig.core.registry.register_driver`.
    driver_name: ClassVar[str] = ""
    #: Format name printed by ``rig io info`` (QEMU's bdrv_get_format_name).
    format_name: ClassVar[str] = ""
    #: True for nodes that react to blkdebug events (the fault injector): :meth:`debug_event`.
    handles_events: ClassVar[bool] = False
    #: Filters that change data must say so; the contract test checks they override every verb.
    modifies_data: ClassVar[bool] = False

    def __init__(self, *, node_name: str = "", read_only: bool = False, no_flush: bool = False,
                 cache_direct: bool = False, discard_unmap: bool = True) -> None:
        self.node_name = node_name
        self.read_only = read_only
        self.no_flush = no_flush
        """QEMU's BDRV_O_NO_FLUSH (cache=unsafe / cache.no-flush=on): flush_to_disk is skipped."""
        self.cache_direct = cache_direct
        """QEMU's BDRV_O_NOCACHE (cache.direct=on): host drivers open with O_DIRECT."""
        self.discard_unmap = discard_unmap
        """QEMU's BDRV_O_UNMAP (discard=unmap); without it discard succeeds doing nothing."""
        self.children: dict[str, Node] = {}
        self.limits = BlockLimits()
        self.supported_write_flags = ReqFlags.NONE
        self.supported_zero_flags = ReqFlags.NONE
        self.write_gen = 0
        self.flushed_gen = 0
        self._flush_lock = threading.Lock()
        self._event_sink: Node | None = None
        self.closed = False

    # ------------------------------------------------------------------ graph
    @classmethod
    def from_options(cls, opts: Options, ctx: OpenContext) -> Node:
        """Build the node from its options. Drivers override to read their own keys."""
        return cls(**ctx.node_kwargs())

    @property
    def primary_child(self) -> Node | None:
        """The child that holds this node's data (``file``, or a filter's ``image``)."""
        children = self.children
        child = children.get("file")
        return child if child is not None else children.get("image")

    def attach_child(self, role: str, child: Node) -> None:
        self.children[role] = child
        self.refresh()

    def refresh(self) -> None:
        """Recompute what depends on children: limits and where events go."""
        self.refresh_limits()
        sink: Node | None = self
        while sink is not None and not sink.handles_events:
            sink = sink.primary_child
        self._event_sink = sink

    def refresh_limits(self) -> None:
        """Drivers compute their own limits at open; filters override to merge their child's."""

    def walk(self) -> list[Node]:
        """This node and every node below it, depth first."""
        out: list[Node] = [self]
        for child in self.children.values():
            out.extend(child.walk())
        return out

    def describe(self) -> str:
        """A short description for error messages and ``info`` (e.g. the file name)."""
        child = self.primary_child
        return child.describe() if child is not None else self.node_name or self.driver_name

    # ----------------------------------------------------------------- events
    def emit(self, event: str) -> None:
        """Fire a blkdebug event at the first event-handling node at or below this one."""
        sink = self._event_sink
        if sink is not None:
            sink.debug_event(event)

    def emit_below(self, event: str) -> None:
        """QEMU's ``BLKDBG_EVENT(bs->file, ev)``: the event goes to the primary child's chain
        (``primary_child.emit(event)``, written out: raw calls this on every request)."""
        children = self.children
        child = children.get("file")
        if child is None:
            child = children.get("image")
        if child is not None:
            sink = child._event_sink
            if sink is not None:
                sink.debug_event(event)

    def debug_event(self, event: str) -> None:
        """Event hook; only nodes with ``handles_events`` receive calls: the events emitted at
        or above them (:meth:`emit`), and their own write events (see :meth:`pwritev`)."""

    @property
    def event_sink(self) -> Node | None:
        """The event-handling node at or below this one (None: events are dropped)."""
        return self._event_sink

    @property
    def event_alignment(self) -> int:
        """Alignment whose read-modify-write emits the ``pwritev_rmw_*`` events at this node."""
        return 1

    # ------------------------------------------------------------ direct path
    def direct(self, write: bool, offset: int, length: int) -> tuple[Node, int, int] | None:
        """Whether this node would pass the aligned read or write ``[offset, offset+length)``
        straight down to a host file, with nothing of its own to do: then the file's node, its
        descriptor and the offset in it, ``(leaf, fd, file_offset)``, and the caller does the
        I/O itself (the export's direct path: docs/export.md, "The direct path"). None, the
        default:
        send the request down the graph.

        A node that answers must do here, exactly once, what it would do for the request on
        the way down (a filter numbers it, a write counts in ``write_gen``), and only once it
        knows it answers: None is returned without changing anything."""
        return None

    def finish_direct(self, write: bool, offset: int, length: int, iov: Iov,
                      done: int) -> None:
        """Finish a direct request of which ``done`` bytes were transferred, as this (leaf)
        node finishes a short transfer of its own."""
        raise NotImplementedError(f"{type(self).__name__} has no direct path")

    # ---------------------------------------------------------- public verbs
    def preadv(self, offset: int, length: int, iov: Iov, flags: ReqFlags = ReqFlags.NONE) -> None:
        self._preadv(offset, length, iov, flags)

    def pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags = ReqFlags.NONE) -> None:
        # The write events go to this node's own hook (QEMU's bdrv_debug_event(bs, ...) in
        # bdrv_aligned_pwritev), not down the graph as emit() would send them.
        events = self.handles_events
        if events:
            self.debug_event("pwritev")
        try:
            # ``flags and``: most writes carry none, and IntFlag's ``&`` is slow.
            emulate_fua = bool(flags and flags & ReqFlags.FUA) and not (
                self.supported_write_flags & ReqFlags.FUA
            )
            if emulate_fua:
                flags &= ~ReqFlags.FUA
            try:
                self._pwritev(offset, length, iov, flags)
            except BaseException:
                self.write_gen += 1  # QEMU's bdrv_co_write_req_finish counts failed writes too
                raise
            self._finish_write(emulate_fua)
        finally:
            if events:
                self.debug_event("pwritev_done")

    def write_zeroes(self, offset: int, length: int, flags: ReqFlags = ReqFlags.NONE) -> None:
        events = self.handles_events
        if events:
            self.debug_event("pwritev_zero")
        try:
            emulate_fua = bool(flags and flags & ReqFlags.FUA) and not (
                self.supported_zero_flags & ReqFlags.FUA
            )
            if emulate_fua:
                flags &= ~ReqFlags.FUA
            try:
                self._write_zeroes(offset, length, flags)
            except BaseException:
                self.write_gen += 1  # as a failed write
                raise
            self._finish_write(emulate_fua)
        finally:
            if events:
                self.debug_event("pwritev_done")

    def _finish_write(self, emulate_fua: bool) -> None:
        # QEMU 7.2 bumps write_gen after its FUA-emulating flush, so that flush does not see the
        # write at this node and relies on the node below having counted it. A leaf has nobody
        # below: bump first there, or a FUA write on a one-node graph would never be synced.
        leaf = not self.children
        if leaf:
            self.write_gen += 1
        if emulate_fua:
            self.flush()
        if not leaf:
            self.write_gen += 1

    def discard(self, offset: int, length: int) -> None:
        if not self.discard_unmap:
            return
        try:
            self._discard(offset, length)
        finally:
            self.write_gen += 1  # QEMU counts a failed discard too

    def flush(self) -> None:
        """QEMU's ``bdrv_co_flush``: flush_to_os, flush_to_disk if dirty, then the children.

        A read-only or empty node flushes nothing; otherwise :meth:`_flush` runs.
        """
        if self.read_only or not self.is_inserted():
            return
        self._flush()

    def _flush(self) -> None:
        """Flush hook: the flush of this node and everything below it (QEMU's ``bdrv_co_flush``
        driver callback, which writes back all layers itself).

        The default is QEMU's sequence, with the flushes of one node serialised. An override
        calls ``super()._flush()`` to go on; returning without it flushes nothing at or below
        this node (a lying flush), raising fails the flush.
        """
        with self._flush_lock:
            current_gen = self.write_gen
            self.emit_below("flush_to_os")
            self._flush_to_os()
            if not self.no_flush and self.flushed_gen != current_gen:
                self.emit_below("flush_to_disk")
                self._flush_to_disk()
            # QEMU 7.2 records the generation only when the flush succeeded (block/io.c,
            # ``out:``), so a failed flush is tried again by the next one.
            self.flushed_gen = current_gen
        first_error: OSError | None = None
        for child in self.children.values():
            try:
                child.flush()
            except OSError as e:
                first_error = first_error or e
        if first_error is not None:
            raise first_error

    def block_status(self, offset: int, length: int) -> BlockStatus:
        return self._block_status(offset, length)

    def getlength(self) -> int:
        return self._getlength()

    def truncate(self, length: int) -> None:
        self._truncate(length)

    # Removable media (fixed media defaults, as QEMU's generic code does).
    def is_inserted(self) -> bool:
        child = self.primary_child
        return child.is_inserted() if child is not None else True

    def media_changed(self) -> bool:
        child = self.primary_child
        return child.media_changed() if child is not None else False

    def eject(self, eject: bool = True, *, force: bool = False) -> None:
        """Open (``eject``) or close the tray. A locked medium refuses (EBUSY) unless ``force``."""
        child = self.primary_child
        if child is None:
            raise _enotsup("eject")
        child.eject(eject, force=force)

    def lock_medium(self, locked: bool) -> None:
        child = self.primary_child
        if child is not None:
            child.lock_medium(locked)

    def drain_begin(self) -> None:
        """QEMU's bdrv_drained_begin: requests queued in this graph must not wait (a throttle
        node lifts its limits). Called by :meth:`BlockBackend.drain`; recurses to children."""
        for child in self.children.values():
            child.drain_begin()

    def drain_end(self) -> None:
        """End of :meth:`drain_begin`."""
        for child in self.children.values():
            child.drain_end()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._close()
        finally:
            for child in self.children.values():
                child.close()

    # ----------------------------------------------------------- driver hooks
    def _preadv(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        raise _enotsup("read")

    def _pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        raise _enotsup("write")

    def _write_zeroes(self, offset: int, length: int, flags: ReqFlags) -> None:
        """Raise ENOTSUP to make the chokepoint fall back to writing a zero buffer."""
        raise _enotsup("write_zeroes")

    def _discard(self, offset: int, length: int) -> None:
        raise _enotsup("discard")

    def _flush_to_os(self) -> None:
        """Write back this node's own caches to the OS (e.g. a format's metadata cache)."""

    def _flush_to_disk(self) -> None:
        """Make everything written so far durable (fdatasync for files)."""

    def _block_status(self, offset: int, length: int) -> BlockStatus:
        return BlockStatus(offset, length, data=True, zero=False, allocated=True)

    def _getlength(self) -> int:
        raise _enotsup("getlength")

    def _truncate(self, length: int) -> None:
        raise _enotsup("truncate")

    def _close(self) -> None:
        """Release the node's own resources; children are closed by :meth:`close`."""
