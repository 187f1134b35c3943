"""Aligned buffers (for O_DIRECT) and iovec helpers."""

from __future__ import annotations

import mmap

# queue's SimpleQueue and Empty are _queue's: the queue module (threading, heapq) costs start-up.
from _queue import Empty, SimpleQueue
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

PAGE_SIZE = mmap.PAGESIZE


def aligned_buffer(size: int, alignment: int = PAGE_SIZE) -> memoryview:
    """A zeroed writable buffer whose address is a multiple of ``alignment`` (<= page size).

    Anonymous mmap gives page alignment; larger alignments are not needed by any block device.
    """
    if alignment > PAGE_SIZE:
        raise ValueError(f"alignment {alignment} exceeds the page size {PAGE_SIZE}")
    m = mmap.mmap(-1, max(size, 1))
    return memoryview(m)[:size]


class BufferPool:
    """Reusable page-aligned buffers of one size (``size`` bytes each), handed out and taken
    back through a queue.

    A fresh buffer costs a page fault per page the first time it is touched (about 5 us per
    4 KiB page on a VM: more than a 1 MiB copy); a pooled one is touched once. A queue, not a
    ``threading.local``: callbacks from foreign threads (libfuse's) get a new Python thread state
    each time, so thread-local caches do not survive between them. At most ``keep`` buffers are
    kept; more may be in use at once (the extra ones are dropped when they come back).
    """

    def __init__(self, size: int, keep: int = 16) -> None:
        if size <= 0:
            raise ValueError(f"buffer size must be positive, got {size}")
        self.size = size
        self.keep = keep
        self._free: SimpleQueue[memoryview] = SimpleQueue()
        #: Buffers made so far (a buffer that came back is reused, not counted again).
        self.allocated = 0

    def get(self) -> memoryview:
        """A page-aligned writable buffer of exactly ``size`` bytes (contents undefined)."""
        try:
            return self._free.get_nowait()
        except Empty:
            self.allocated += 1
            return aligned_buffer(self.size)

    def put(self, buf: memoryview) -> None:
        """Give back a buffer from :meth:`get` (the whole one, not a slice)."""
        if self._free.qsize() < self.keep:
            self._free.put(buf)

    @contextmanager
    def lend(self, length: int | None = None) -> Iterator[memoryview]:
        """A pooled buffer (its first ``length`` bytes) for the block; given back after it."""
        buf = self.get()
        try:
            yield buf if length is None else buf[:length]
        finally:
            self.put(buf)


#: A buffer's address through ctypes, set by the first :func:`buffer_address`: only O_DIRECT
#: needs addresses, and ``import ctypes`` would cost every start of ``rig io`` otherwise.
_address: Callable[[memoryview], int] | None = None


def _load_address() -> Callable[[memoryview], int]:
    global _address
    import ctypes

    addressof, from_buffer = ctypes.addressof, ctypes.c_char.from_buffer

    def address(buf: memoryview) -> int:
        return addressof(from_buffer(buf))

    _address = address
    return address


def buffer_address(buf: memoryview) -> int | None:
    """The start address of a writable buffer, or None when it cannot be known (read-only)."""
    if buf.readonly:
        return None
    try:
        return (_address or _load_address())(buf)
    except (TypeError, ValueError):
        return None


def iov_aligned(iov: Sequence[memoryview], alignment: int) -> bool:
    """True when every buffer starts and ends on ``alignment`` (O_DIRECT's memory rule)."""
    if alignment <= 1:
        return True
    mask = alignment - 1
    for buf in iov:
        if buf.nbytes & mask:
            return False
        addr = buffer_address(buf)
        if addr is None or addr & mask:
            return False
    return True


def iov_slice(iov: Sequence[memoryview], start: int, length: int) -> list[memoryview]:
    """The bytes ``[start, start+length)`` of the concatenated iovec, without copying."""
    out: list[memoryview] = []
    pos = 0
    end = start + length
    for buf in iov:
        n = buf.nbytes
        if pos + n > start and pos < end:
            lo = max(start - pos, 0)
            hi = min(end - pos, n)
            out.append(buf[lo:hi])
        pos += n
        if pos >= end:
            break
    return out


def iov_copy_out(iov: Sequence[memoryview], dst: memoryview) -> None:
    """Concatenate ``iov`` into ``dst`` (which must be exactly as long)."""
    pos = 0
    for buf in iov:
        n = buf.nbytes
        dst[pos:pos + n] = buf
        pos += n


def iov_copy_in(iov: Sequence[memoryview], src: memoryview) -> None:
    """Scatter ``src`` into the buffers of ``iov``."""
    pos = 0
    for buf in iov:
        n = buf.nbytes
        buf[:] = src[pos:pos + n]
        pos += n


def as_byte_views(bufs: Sequence[object]) -> list[memoryview]:
    """Normalise bytes-like objects to flat unsigned-byte memoryviews."""
    out = []
    for b in bufs:
        mv = b if isinstance(b, memoryview) else memoryview(b)  # type: ignore[arg-type]
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        out.append(mv)
    return out
