"""The ``copy-on-read`` filter (QEMU's block/copy-on-read.c): reads of data the top image does
not hold write that data into the top image, so the backing chain is read once.

Options: ``file`` (the top image, writable) and ``bottom`` (optional node name: the lowest
backing node whose data is copied; data that only a node below it holds is read, not copied).

A read is cut where the top image's allocation changes. Allocated parts are read through. An
unallocated part (if, with ``bottom``, some node from the top's backing down to ``bottom`` holds
it) is widened to whole clusters of the top image, read through the chain, written into the top
(as write_zeroes when it is all zeroes, as QEMU does), and the guest gets its slice. The filter
lock covers that check-read-write and every write passing through, so a guest write to the same
cluster is never overwritten by older backing data.
"""

from __future__ import annotations

import errno
import threading
from typing import TYPE_CHECKING, Any, ClassVar

from rig.core.buffers import aligned_buffer, iov_copy_in, iov_slice
from rig.core.node import Iov, Node, ReqFlags
from rig.core.registry import register_driver
from rig.errors import ConfigError
from rig.filters.base import Filter

if TYPE_CHECKING:
    from rig.core.graph import OpenContext
    from rig.core.options import Options

DEFAULT_CLUSTER = 65536
#: Largest piece copied at once (QEMU's bounce buffer limit is larger; this keeps memory small).
MAX_COPY = 1 << 20


def backing_of(node: Node) -> Node | None:
    """The next node down a backing chain: the backing child, or through a filter's child."""
    backing = node.children.get("backing")
    if backing is not None:
        return backing
    if isinstance(node, Filter) and not node.format_name:
        return node.children.get(node.child_role)
    return None


@register_driver("copy-on-read")
class CopyOnReadFilter(Filter):
    #: QEMU's generic copy-on-read sends cor_write down before it writes the copied data
    #: (rig.filters.blkdebug_events: a blkdebug rule on it below this node can fire).
    blkdebug_events: ClassVar[frozenset[str]] = frozenset({"cor_write"})

    def __init__(self, *, bottom: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bottom_name = bottom
        self.base: Node | None = None
        """The first node *not* copied from (below ``bottom``); None: copy from all."""
        self._lock = threading.RLock()
        self.copied_bytes = 0
        self._buf: memoryview | None = None

    @classmethod
    def from_options(cls, opts: Options, ctx: OpenContext) -> Node:
        node = cls(bottom=opts.str("bottom", "") or "", **ctx.node_kwargs())
        return node.open_child(ctx, node._check)

    def _check(self) -> None:
        if self.read_only:  # it writes what it copies: QEMU's permission error
            raise ConfigError("Block node is read-only")
        if self.child.read_only:
            raise ConfigError("copy-on-read: the image below must be writable")
        if self.bottom_name:
            node = backing_of(self.child)
            while node is not None and node.node_name != self.bottom_name:
                node = backing_of(node)
            if node is None:
                raise ConfigError(f"copy-on-read: node '{self.bottom_name}' is not a backing "
                                  f"image of '{self.child.describe()}'")
            self.base = backing_of(node)

    @property
    def cluster_size(self) -> int:
        node: Node | None = self.child
        while node is not None:
            size = getattr(node, "cluster_size", None)
            if isinstance(size, int) and size > 0:
                return size
            node = node.primary_child if isinstance(node, Filter) else None
        return DEFAULT_CLUSTER

    # ---------------------------------------------------------------- reads
    def _preadv(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        top = self.child
        pos = 0
        while pos < length:
            off = offset + pos
            status = top.block_status(off, length - pos)
            n = max(1, min(status.length, length - pos))
            if status.allocated or self.read_only:
                top.preadv(off, n, _slice(iov, pos, n), flags)
            else:
                n = self._copy(off, min(n, MAX_COPY), _slice(iov, pos, length - pos), flags)
            pos += n

    def prefetch(self, offset: int, length: int, scratch: memoryview) -> None:
        """QEMU's ``BDRV_REQ_PREFETCH`` read, for the stream job: copy what the chain holds of
        ``[offset, offset+length)`` into the top, as a read would, without handing the data
        back (so without copying it out of the filter's buffer). ``scratch`` (``length``
        bytes) takes what the read-through of parts the top already holds reads. The top's
        allocation is asked once per piece, under the lock (a read asks once more before
        taking it: the caller has just asked itself). Pieces are at most ``MAX_COPY``."""
        pos = 0
        while pos < length:
            n = min(length - pos, MAX_COPY)
            pos += self._copy(offset + pos, n, [scratch[pos:pos + n]], ReqFlags.NONE,
                              hand_back=False)

    def _copy(self, offset: int, length: int, dst: Iov, flags: ReqFlags, *,
              hand_back: bool = True) -> int:
        """Copy (at least) the start of ``[offset, offset+length)`` up; bytes done. Without
        ``hand_back`` (a prefetch) the copied data is not copied into ``dst``."""
        top = self.child
        with self._lock:
            status = top.block_status(offset, length)  # again, under the lock
            n = max(1, min(status.length, length))
            if status.allocated:
                top.preadv(offset, n, _slice(dst, 0, n), flags)
                return n
            if self.base is not None:
                copy, n = self._allocated_above(offset, n)
                if not copy:
                    top.preadv(offset, n, _slice(dst, 0, n), flags)
                    return n
            cs = self.cluster_size
            start = offset - offset % cs
            end = min(-(-(offset + n) // cs) * cs, top.getlength())
            align = top.limits.request_alignment
            end = -(-end // align) * align
            buf = self._scratch(end - start)
            top.preadv(start, end - start, [buf], flags)
            self.emit_below("cor_write")
            self._write_back(start, buf, cs)
            self.copied_bytes += end - start
            if hand_back:
                iov_copy_in(_slice(dst, 0, n), buf[offset - start:offset - start + n])
            return n

    def _scratch(self, size: int) -> memoryview:
        """A reused aligned buffer for copies (called under the lock): fresh memory for every
        copy would cost a page fault per page, more than the copy itself."""
        if self._buf is None or self._buf.nbytes < size:
            self._buf = aligned_buffer(size)
        return self._buf[:size]

    def _write_back(self, start: int, buf: memoryview, cs: int) -> None:
        """Write ``buf`` at ``start`` into the top: runs of all-zero clusters as write_zeroes
        (QEMU does the same, so copying a sparse backing file keeps the top sparse)."""
        top = self.child
        size = buf.nbytes
        zeros = [_is_zero(buf[p:p + cs]) for p in range(0, size, cs)]  # once per cluster
        pos = i = 0
        while pos < size:
            zero = zeros[i]
            i += 1
            while i < len(zeros) and zeros[i] == zero:
                i += 1
            end = min(i * cs, size)
            if zero:
                try:
                    top.write_zeroes(start + pos, end - pos, ReqFlags.NONE)
                except OSError as e:
                    if e.errno != errno.ENOTSUP:
                        raise
                    top.pwritev(start + pos, end - pos, [buf[pos:end]])
            else:
                top.pwritev(start + pos, end - pos, [buf[pos:end]])
            pos = end

    def _allocated_above(self, offset: int, length: int) -> tuple[bool, int]:
        """QEMU's bdrv_is_allocated_above from the top's backing down to (not including) the
        base: (allocated somewhere, length over which that answer holds). An image further
        down that ends before ``offset`` reads as zeroes hiding what lies below it, so it
        counts as allocated (QEMU's rule); the first backing image ending there does not."""
        node = backing_of(self.child)
        first = True
        while node is not None and node is not self.base:
            if offset >= node.getlength():
                return not first, length
            first = False
            status = node.block_status(offset, length)
            if status.allocated:
                return True, max(1, min(status.length, length))
            length = max(1, min(status.length, length))
            node = backing_of(node)
        return False, length

    # --------------------------------------------------------------- writes
    def _pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        with self._lock:
            self.child.pwritev(offset, length, iov, flags)

    def _write_zeroes(self, offset: int, length: int, flags: ReqFlags) -> None:
        with self._lock:
            self.child.write_zeroes(offset, length, flags)

    def _discard(self, offset: int, length: int) -> None:
        with self._lock:
            self.child.discard(offset, length)


_ZERO_HEAD = bytes(16)
#: Zero blocks by size (cluster sizes; a few at most), compared against instead of made anew.
_zero_blocks: dict[int, bytes] = {}


def _is_zero(view: memoryview) -> bool:
    """Whether a byte view (format ``B``) is all zeroes. Data rarely starts with 16 zero
    bytes, so most clusters are answered from their head; the rest take one copy and one
    memcmp (against a cached zero block, not a new one each time)."""
    n = view.nbytes
    if n > 16 and view[:16].tobytes() != _ZERO_HEAD:
        return False
    zero = _zero_blocks.get(n)
    if zero is None:
        zero = bytes(n)
        if len(_zero_blocks) < 8:
            _zero_blocks[n] = zero
    return view.tobytes() == zero


def _slice(iov: Iov, start: int, length: int) -> list[memoryview]:
    return iov_slice(iov, start, length)
