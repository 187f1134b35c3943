"""The ``memory`` protocol driver: a real RAM-backed node (QEMU's null-co, nbdkit's memory plugin).

Options:

* ``size`` (required): the length in bytes, a size string (``"1M"``) or an int.
* ``logical-block-size`` (default 1, byte-addressable): a power of two; it becomes the node's
  ``request_alignment``, so the chokepoint must do read-modify-write for smaller requests.
* ``max-transfer`` (default 0, unlimited): the largest request the chokepoint may pass down.

Allocation is tracked per *granule* (``max(4096, logical-block-size)`` bytes) for
``block_status``: a granule is a hole (reads zeroes, holds no data), data, or allocated zeroes.
A write marks every granule it touches as data; ``discard`` and ``write_zeroes`` with
``MAY_UNMAP`` turn fully covered granules back into holes. The content is not durable past the
process, and nothing is cached, so flush has nothing to do and FUA is emulated by the generic
layer (a flush), which keeps flush counting visible to filters above.

The whole device is allocated (zeroed) at open: a ``size`` the machine cannot hold (more than its
RAM, or what the allocator refuses, e.g. ``size=1E``) is a one-line ConfigError then, never a
MemoryError at the first request. ``truncate`` past what can be allocated fails with ENOMEM.
"""

from __future__ import annotations

import errno
import os
import threading
from typing import TYPE_CHECKING, Any

from rig.core.limits import BlockLimits
from rig.core.node import BlockStatus, Iov, Node, ReqFlags
from rig.core.registry import register_driver
from rig.core.units import format_size
from rig.errors import ConfigError

if TYPE_CHECKING:
    from rig.core.graph import OpenContext
    from rig.core.options import Options

GRANULE = 4096
_HOLE, _DATA, _ZERO = 0, 1, 2


@register_driver("memory")
class MemoryNode(Node):
    """A RAM-backed block node of ``size`` bytes."""

    format_name = "memory"

    def __init__(self, size: int, *, logical_block_size: int = 1, max_transfer: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        lbs = logical_block_size
        if lbs < 1 or lbs & (lbs - 1):
            raise ConfigError(f"logical-block-size: must be a power of two: {lbs!r}")
        if max_transfer % lbs:
            raise ConfigError(f"max-transfer: {max_transfer} is not a multiple of "
                              f"logical-block-size {lbs}")
        if size % lbs:
            raise ConfigError(f"size: {size} is not a multiple of logical-block-size {lbs}")
        self.limits = BlockLimits(request_alignment=lbs, max_transfer=max_transfer,
                                  discard_granularity=lbs)
        self.supported_zero_flags = ReqFlags.MAY_UNMAP
        self.granule = max(GRANULE, lbs)
        try:
            _check_ram(size)
            self._data = bytearray(size)
            self._alloc = bytearray(self._granules(size))
        except (MemoryError, OverflowError) as e:
            raise ConfigError(f"size: the memory driver cannot allocate {format_size(size)} "
                              f"({size} bytes): {_why(e)}; give a smaller size, or use a sparse "
                              "file (driver=file)") from None
        self._lock = threading.Lock()

    @classmethod
    def from_options(cls, opts: Options, ctx: OpenContext) -> Node:
        if not opts.has("size"):
            raise ConfigError(f"Parameter '{opts.path}size' is missing")
        return cls(opts.size("size"),
                   logical_block_size=opts.size("logical-block-size", 1),
                   max_transfer=opts.size("max-transfer", 0),
                   **ctx.node_kwargs())

    def describe(self) -> str:
        return self.node_name or f"memory:{len(self._data)}"

    def _granules(self, length: int) -> int:
        return -(-length // self.granule)

    def _assert_aligned(self, offset: int, length: int) -> None:
        # The chokepoint guarantees this; assert it as blkdebug does (gone under python -O).
        align = self.limits.request_alignment
        assert (offset | length) % align == 0, f"unaligned request {offset}+{length} / {align}"
        assert offset + length <= len(self._data), f"request {offset}+{length} past the end"

    def _assert_transfer(self, offset: int, length: int) -> None:
        self._assert_aligned(offset, length)
        max_transfer = self.limits.max_transfer
        assert not max_transfer or length <= max_transfer, f"{length} bytes > max-transfer"

    def _set_alloc(self, offset: int, length: int, state: int, *, whole_only: bool) -> None:
        """Set the state of the granules ``[offset, offset+length)`` touches (or covers)."""
        if length <= 0:
            return
        g = self.granule
        end = offset + length
        if whole_only:
            first, last = -(-offset // g), end // g
            if end == len(self._data):  # the short last granule counts as covered
                last = self._granules(end)
        else:
            first, last = offset // g, self._granules(end)
        if last > first:
            self._alloc[first:last] = bytes([state]) * (last - first)

    # ----------------------------------------------------------- driver hooks
    def _preadv(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        self._assert_transfer(offset, length)
        with self._lock:
            pos = offset
            for buf in iov:
                n = buf.nbytes
                buf[:] = self._data[pos:pos + n]
                pos += n

    def _pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        self._assert_transfer(offset, length)
        with self._lock:
            pos = offset
            for buf in iov:
                n = buf.nbytes
                self._data[pos:pos + n] = buf
                pos += n
            self._set_alloc(offset, length, _DATA, whole_only=False)

    def _write_zeroes(self, offset: int, length: int, flags: ReqFlags) -> None:
        self._assert_aligned(offset, length)
        with self._lock:
            self._data[offset:offset + length] = bytes(length)
            self._set_alloc(offset, length, _ZERO, whole_only=True)
            if flags & ReqFlags.MAY_UNMAP:
                self._set_alloc(offset, length, _HOLE, whole_only=True)

    def _discard(self, offset: int, length: int) -> None:
        # Like a block device's BLKDISCARD: a piece that is not whole blocks is EINVAL. The
        # chokepoint passes unaligned head/tail pieces down, as QEMU's bdrv_co_pdiscard does.
        if (offset | length) % self.limits.request_alignment:
            raise OSError(errno.EINVAL, f"discard of {offset}+{length}: not whole blocks of "
                          f"{self.limits.request_alignment} bytes")
        with self._lock:
            self._data[offset:offset + length] = bytes(length)
            self._set_alloc(offset, length, _HOLE, whole_only=True)

    def _block_status(self, offset: int, length: int) -> BlockStatus:
        with self._lock:
            end = min(offset + length, len(self._data))
            g = self.granule
            idx = offset // g
            state = self._alloc[idx] if idx < len(self._alloc) else _HOLE
            pos = (idx + 1) * g
            while pos < end and self._alloc[pos // g] == state:
                pos += g
        return BlockStatus(offset, max(min(pos, end) - offset, 0), data=state != _HOLE,
                           zero=state != _DATA, allocated=True)

    def _getlength(self) -> int:
        return len(self._data)

    def _truncate(self, length: int) -> None:
        align = self.limits.request_alignment
        if length % align:
            raise OSError(errno.EINVAL,
                          f"truncate: {length} is not a multiple of the block size {align}")
        with self._lock:
            old = len(self._data)
            if length < old:
                del self._data[length:]
                del self._alloc[self._granules(length):]
            else:
                try:
                    _check_ram(length)
                    self._data.extend(bytes(length - old))
                    self._alloc.extend(bytes(self._granules(length) - len(self._alloc)))
                except (MemoryError, OverflowError):
                    del self._data[old:]
                    del self._alloc[self._granules(old):]
                    raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM)) from None


def _ram() -> int:
    """This machine's RAM in bytes (0 when unknown)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _check_ram(size: int) -> None:
    """MemoryError for a device bigger than the machine's RAM: zeroing it would not fail, the
    OOM killer would end the process instead."""
    ram = _ram()
    if ram and size > ram:
        raise MemoryError(f"more than this machine's RAM ({format_size(ram)})")


def _why(e: BaseException) -> str:
    if isinstance(e, MemoryError) and str(e):
        return str(e)
    return "out of memory" if isinstance(e, MemoryError) else "too large for this machine"
