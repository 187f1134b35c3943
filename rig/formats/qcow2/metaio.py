"""Metadata I/O on the image's ``file`` child, shared by the tables and the refcounts.

Metadata is written through (no metadata cache to flush): a table entry is written as the
smallest piece of its cached table that the child's ``request_alignment`` allows, from an aligned
buffer when the child needs one (O_DIRECT). It also knows which clusters hold metadata, so an
allocation that would hand out a metadata cluster (a refcount of 0 where there must be 1), or a
table that points into metadata, is reported as corruption instead of overwriting it.
"""

from __future__ import annotations

from rig.core.buffers import aligned_buffer
from rig.core.node import Node
from rig.formats.qcow2.errors import CorruptImageError


class MetaIO:
    def __init__(self, file: Node, path: str, cluster_bits: int) -> None:
        self.file = file
        self.path = path
        self.cluster_bits = cluster_bits
        self.cluster_size = 1 << cluster_bits
        self.file_end = file.getlength()
        #: Cluster index -> what metadata lives there.
        self.meta: dict[int, str] = {}

    # ----------------------------------------------------------------- checks
    def corrupt(self, what: str) -> CorruptImageError:
        return CorruptImageError(self.path, what)

    def check_range(self, offset: int, length: int, what: str, *, in_file: bool = True) -> None:
        """A metadata structure at ``offset``: cluster aligned and (optionally) inside the file."""
        if offset % self.cluster_size:
            raise self.corrupt(f"{what} offset 0x{offset:x} is not cluster aligned")
        if in_file and offset + length > self.file_end:
            self.file_end = self.file.getlength()
            if offset + length > self.file_end:
                raise self.corrupt(f"{what} at 0x{offset:x} (+{length}) is past the end of the "
                                   f"file (0x{self.file_end:x})")

    def claim(self, offset: int, length: int, what: str) -> None:
        """Record the clusters of a metadata structure; overlapping another one is corruption."""
        first = offset >> self.cluster_bits
        last = (offset + max(length, 1) - 1) >> self.cluster_bits
        for c in range(first, last + 1):
            other = self.meta.get(c)
            if other is not None and other != what:
                raise self.corrupt(f"{what} at 0x{offset:x} overlaps {other}")
            self.meta[c] = what

    def release(self, offset: int, length: int) -> None:
        first = offset >> self.cluster_bits
        last = (offset + max(length, 1) - 1) >> self.cluster_bits
        for c in range(first, last + 1):
            self.meta.pop(c, None)

    def check_data_cluster(self, host: int, what: str) -> None:
        if host % self.cluster_size:
            raise self.corrupt(f"{what} 0x{host:x} is not cluster aligned")
        other = self.meta.get(host >> self.cluster_bits)
        if other is not None:
            raise self.corrupt(f"{what} 0x{host:x} overlaps {other}")

    # --------------------------------------------------------------------- io
    def read(self, offset: int, length: int) -> bytearray:
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

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``offset``; both must already suit the child's alignment."""
        n = len(data)
        if self.file.limits.buffer_alignment > 1:
            buf = aligned_buffer(n)
            buf[:] = data
            self.file.pwritev(offset, n, [buf])
        else:
            self.file.pwritev(offset, n, [memoryview(data).cast("B")])
        if offset + n > self.file_end:
            self.file_end = offset + n

    def write_slice(self, table_offset: int, table: bytearray, start: int, end: int) -> None:
        """Write bytes ``[start, end)`` of a cached table living at ``table_offset``, widened to
        the child's request alignment (tables are cluster aligned, so this stays inside)."""
        align = self.file.limits.request_alignment
        start -= start % align
        end = min(len(table), -(-end // align) * align)
        self.write(table_offset + start, memoryview(table)[start:end])
