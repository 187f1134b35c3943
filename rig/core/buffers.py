"""Aligned buffers (for O_DIRECT) and iovec helpers."""

from __future__ import annotations

import ctypes
import mmap
from collections.abc import Sequence

PAGE_SIZE = mmap.PAGESIZE


def aligned_buffer(size: int, alignment: int = PAGE_SIZE) -> memoryview:
    """A zeroed writable buffer whose address is a multiple of ``alignment`` (<= page size).

    Anonymous mmap gives page alignment; larger alignments are not needed by any block device.
    """
    if alignment > PAGE_SIZE:
        raise ValueError(f"alignment {alignment} exceeds the page size {PAGE_SIZE}")
    m = mmap.mmap(-1, max(size, 1))
    return memoryview(m)[:size]


def buffer_address(buf: memoryview) -> int | None:
    """The start address of a writable buffer, or None when it cannot be known (read-only)."""
    if buf.readonly:
        return None
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(buf))
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
