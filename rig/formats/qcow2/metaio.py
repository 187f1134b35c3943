"""Metadata I/O on the image's ``file`` child, shared by the tables and the refcounts.

Metadata is written through (no metadata cache to flush): a table entry is written as the
smallest piece of its cached table that the child's ``request_alignment`` allows, from an aligned
buffer when the child needs one (O_DIRECT). It also knows which clusters hold which metadata
(:mod:`overlap` kinds), so every write to the file (metadata or guest data) is checked first,
as QEMU's ``overlap-check`` does, and a table pointing into metadata is reported as corruption.
"""

from __future__ import annotations

import errno
import os

from rig.core.buffers import aligned_buffer
from rig.core.node import Node
from rig.formats.qcow2.errors import CorruptImageError, CorruptionEvent
from rig.formats.qcow2.overlap import CACHED, NONE, Ol, name

#: QEMU's limit for table offsets and sizes (they are int64_t inside).
INT64_MAX = (1 << 63) - 1


class MetaIO:
    def __init__(self, file: Node, path: str, cluster_bits: int, checks: Ol = CACHED) -> None:
        self.file = file
        self.path = path
        self.cluster_bits = cluster_bits
        self.cluster_size = 1 << cluster_bits
        self.file_end = file.getlength()
        self.checks = checks
        """The overlap checks to run before each write (the ``overlap-check`` option)."""
        #: Cluster index -> the kinds of metadata living there (several when tables overlap).
        self.meta: dict[int, int] = {}
        self.inactive_l2_errno = 0
        """Set when a snapshot's L1 table is invalid: QEMU's inactive-L2 check cannot read it
        and fails every write it runs for with this errno (EINVAL, or EFBIG: too large)."""

    def emit(self, event: str) -> None:
        """A blkdebug event down the ``file`` child's chain (QEMU's ``BLKDBG_EVENT(bs->file,
        EV)``)."""
        self.file.emit(event)

    # ----------------------------------------------------------------- checks
    def corrupt(self, what: str) -> CorruptImageError:
        return CorruptImageError(self.path, what)

    def event(self, what: str) -> CorruptionEvent:
        """Corruption QEMU signals (the node marks the image corrupt)."""
        return CorruptionEvent(self.path, what)

    def check_table(self, offset: int, length: int, what: str) -> None:
        """A table at ``offset``: cluster aligned, and its end representable (QEMU's
        validate_table_offset). Past the end of the file is fine: it reads as zeroes."""
        if offset % self.cluster_size:
            raise self.corrupt(f"{what} offset 0x{offset:x} is not cluster aligned")
        if offset > INT64_MAX - length:
            raise self.corrupt(f"{what} offset 0x{offset:x} is invalid (its end is past 2^63)")

    def claim(self, offset: int, length: int, kind: Ol) -> None:
        """Record the clusters of a metadata structure (overlaps are found when written)."""
        meta = self.meta
        for c in self._clusters(offset, length):
            meta[c] = meta.get(c, 0) | kind

    def release(self, offset: int, length: int, kind: Ol) -> None:
        meta = self.meta
        for c in self._clusters(offset, length):
            left = meta.get(c, 0) & ~kind
            if left:
                meta[c] = left
            else:
                meta.pop(c, None)

    def _clusters(self, offset: int, length: int) -> range:
        return range(offset >> self.cluster_bits,
                      ((offset + max(length, 1) - 1) >> self.cluster_bits) + 1)

    def what(self, cluster: int) -> str | None:
        """QEMU's name for the metadata in a cluster, or None."""
        kinds = self.meta.get(cluster)
        return None if kinds is None else name(kinds)

    def overlaps(self, offset: int, length: int, ignore: int = NONE) -> int:
        """The kinds of checked metadata (all but ``ignore``) that ``[offset, offset+length)``
        touches, at cluster granularity as QEMU rounds the range; 0 when none."""
        checks = self.checks & ~ignore
        if not checks or length <= 0:
            return 0
        first = offset >> self.cluster_bits
        last = (offset + length - 1) >> self.cluster_bits
        meta = self.meta
        found = 0
        if last - first < len(meta):
            for c in range(first, last + 1):
                found |= meta.get(c, 0)
        else:
            for c, kinds in meta.items():
                if first <= c <= last:
                    found |= kinds
        return found & checks

    def check_write(self, offset: int, length: int, ignore: int = NONE) -> None:
        """QEMU's pre-write overlap check: corruption (a :class:`CorruptionEvent`) when the
        write would land on metadata the ``overlap-check`` option covers."""
        hit = self.overlaps(offset, length, ignore)
        if hit:
            raise self.event(f"Preventing invalid write on metadata (overlaps with {name(hit)})")
        code = self.inactive_l2_errno
        if code and self.checks & ~ignore & Ol.INACTIVE_L2 and length > 0:
            raise OSError(code, os.strerror(code))

    # --------------------------------------------------------------------- io
    def _in_range(self, offset: int, length: int) -> None:
        if offset + length > INT64_MAX:
            raise OSError(errno.EIO, f"qcow2: metadata at 0x{offset:x} is past 2^63")

    def read(self, offset: int, length: int) -> bytearray:
        self._in_range(offset, length)
        align = self.file.limits.request_alignment
        start = offset - offset % align
        end = -(-(offset + length) // align) * align
        if self.file.limits.buffer_alignment > 1 or align > 1:
            buf = aligned_buffer(end - start)
            self.file.preadv(start, end - start, [buf])
            return bytearray(buf[offset - start:offset - start + length])
        out = bytearray(length)
        self.file.preadv(offset, length, [memoryview(out)])
        return out

    def write(self, offset: int, data: bytes | bytearray | memoryview, *,
              ignore: int = NONE) -> None:
        """Write ``data`` at ``offset``; both must already suit the child's alignment. The
        overlap check runs first, skipping the kinds in ``ignore`` (the structure written)."""
        n = len(data)
        self._in_range(offset, n)
        self.check_write(offset, n, ignore)
        if self.file.limits.buffer_alignment > 1:
            buf = aligned_buffer(n)
            buf[:] = data
            self.file.pwritev(offset, n, [buf])
        else:
            self.file.pwritev(offset, n, [memoryview(data).cast("B")])
        if offset + n > self.file_end:
            self.file_end = offset + n

    def write_slice(self, table_offset: int, table: bytearray, start: int, end: int, *,
                    ignore: int = NONE) -> None:
        """Write bytes ``[start, end)`` of a cached table living at ``table_offset``, widened to
        the child's request alignment (tables are cluster aligned, so this stays inside)."""
        align = self.file.limits.request_alignment
        start -= start % align
        end = min(len(table), -(-end // align) * align)
        self.write(table_offset + start, memoryview(table)[start:end], ignore=ignore)
