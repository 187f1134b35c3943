"""The ``overlay`` filter: a throw-away copy-on-write layer in memory over its child.

Graph form::

    {"driver": "overlay", "file": {...the base...}, "chunk-size": "4K"}

Writes, write-zeroes and discards never reach the child: the first one that touches a chunk
copies that chunk of the child into memory, and from then on the chunk is served from memory.
Reads see the overlay's chunks over the child's data. :meth:`OverlayFilter.reset` throws every
change away, so the child reads as it did before, in time proportional to what was changed, not
to the device's size. A discard reads back as zeroes.

This is what ``rig crash check`` puts each crash state on: the child holds a cut's durable image,
the state's in-flight pieces are written into the overlay, the checker may write whatever it
likes (a journal replay, a hot sqlite journal rolled back), and the next state starts from a
reset. It is also a cheap scratch layer for any test that must not change its base.

Flush passes to the child (nothing of the overlay is durable past the process, as for the
memory node). ``chunk-size`` is a power of two, at least 512 and at least the child's request
alignment (default 4 KiB).
"""

from __future__ import annotations

import errno
import threading
from typing import TYPE_CHECKING, Any, ClassVar

from rig.core.buffers import aligned_buffer, iov_copy_in, iov_copy_out, iov_slice
from rig.core.node import BlockStatus, Iov, Node, ReqFlags
from rig.core.registry import register_driver
from rig.errors import ConfigError
from rig.filters.base import Filter

if TYPE_CHECKING:
    from rig.core.graph import OpenContext
    from rig.core.options import Options

DEFAULT_CHUNK = 4096


@register_driver("overlay")
class OverlayFilter(Filter):
    """Copy-on-write changes in memory over the child. See the module docstring."""

    modifies_data: ClassVar[bool] = True

    def __init__(self, *, chunk_size: int = DEFAULT_CHUNK, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if chunk_size < 512 or chunk_size & (chunk_size - 1):
            raise ConfigError(f"overlay: chunk-size must be a power of two >= 512: {chunk_size}")
        self.chunk = chunk_size
        self._chunks: dict[int, bytearray] = {}
        self._lock = threading.Lock()
        self._writes = 0

    @classmethod
    def from_options(cls, opts: Options, ctx: OpenContext) -> Node:
        node = cls(chunk_size=opts.size("chunk-size", DEFAULT_CHUNK), **ctx.node_kwargs())

        def check_alignment() -> None:
            if node.chunk % node.child.limits.request_alignment:
                raise ConfigError(f"overlay: chunk-size {node.chunk} is not a multiple of the "
                                  f"child's request alignment "
                                  f"{node.child.limits.request_alignment}")

        return node.open_child(ctx, then=check_alignment)

    # ------------------------------------------------------------------ control
    def reset(self) -> int:
        """Throw every change away; returns how many chunks were dropped."""
        with self._lock:
            n = len(self._chunks)
            self._chunks = {}
            return n

    def changed_bytes(self) -> int:
        """Bytes held in the overlay (whole chunks)."""
        with self._lock:
            return len(self._chunks) * self.chunk

    def writes(self) -> int:
        """Writes, write-zeroes and discards taken since the node opened."""
        with self._lock:
            return self._writes

    def put(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``offset`` into the overlay directly (no request machinery, any
        alignment): how a crash state's pieces are laid over the base."""
        view = memoryview(data).cast("B")
        with self._lock:
            self._store(offset, len(view), lambda pos, n: view[pos:pos + n])

    # -------------------------------------------------------------- the layer
    def _chunk(self, index: int) -> bytearray:
        """The chunk ``index``, copied from the child first if the overlay lacks it. Caller
        holds the lock."""
        chunk = self._chunks.get(index)
        if chunk is None:
            start = index * self.chunk
            n = min(self.chunk, self.child.getlength() - start)
            buf = aligned_buffer(n, max(self.child.limits.buffer_alignment, 1))
            self.child.preadv(start, n, [buf], ReqFlags.NONE)
            chunk = bytearray(buf)
            self._chunks[index] = chunk
        return chunk

    def _store(self, offset: int, length: int, source: Any) -> None:
        """Copy ``source(pos, n)`` (bytes for ``[offset+pos, offset+pos+n)``, or None for
        zeroes) into the chunks. Caller holds the lock."""
        size = self.chunk
        pos = 0
        while pos < length:
            index = (offset + pos) // size
            inside = (offset + pos) - index * size
            n = min(size - inside, length - pos)
            data = source(pos, n)
            if data is None and inside == 0 and n == size:
                self._chunks[index] = bytearray(size)  # whole chunk zeroed: no copy needed
            else:
                chunk = self._chunk(index)
                chunk[inside:inside + n] = bytes(n) if data is None else data
            pos += n
        self._writes += 1

    def _preadv(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        size = self.chunk
        with self._lock:
            if not self._chunks:
                self.child.preadv(offset, length, iov, flags)
                return
            pos = 0
            while pos < length:
                index = (offset + pos) // size
                inside = (offset + pos) - index * size
                chunk = self._chunks.get(index)
                if chunk is not None:
                    n = min(size - inside, length - pos)
                    iov_copy_in(iov_slice(iov, pos, n), memoryview(chunk)[inside:inside + n])
                    pos += n
                    continue
                # A run of chunks the overlay does not hold: one read from the child.
                end = pos
                while end < length:
                    i = (offset + end) // size
                    if i in self._chunks:
                        break
                    end = min(length, (i + 1) * size - offset)
                self.child.preadv(offset + pos, end - pos, iov_slice(iov, pos, end - pos), flags)
                pos = end

    def _pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        data = bytearray(length)
        iov_copy_out(iov, memoryview(data))
        view = memoryview(data)
        with self._lock:
            self._store(offset, length, lambda pos, n: view[pos:pos + n])

    def _write_zeroes(self, offset: int, length: int, flags: ReqFlags) -> None:
        with self._lock:
            self._store(offset, length, lambda pos, n: None)

    def _discard(self, offset: int, length: int) -> None:
        with self._lock:
            self._store(offset, length, lambda pos, n: None)

    def _block_status(self, offset: int, length: int) -> BlockStatus:
        size = self.chunk
        with self._lock:
            first = offset // size
            if first in self._chunks:
                end = offset
                while end < offset + length and end // size in self._chunks:
                    end = (end // size + 1) * size
                return BlockStatus(offset, min(end, offset + length) - offset, data=True,
                                   zero=False, allocated=True)
            end = offset
            while end < offset + length and end // size not in self._chunks:
                end = (end // size + 1) * size
            below = self.child.block_status(offset, min(end, offset + length) - offset)
        return below

    def _truncate(self, length: int) -> None:
        raise OSError(errno.ENOTSUP, "overlay: truncate is not supported")
