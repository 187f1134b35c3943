"""Refcounts: how many references each host cluster has (0 = free).

A two-level structure: the refcount *table* (``refcount_table_clusters`` clusters of u64 offsets)
points at refcount *blocks* (one cluster each) of ``2**refcount_order``-bit entries. Entries of 8
bits or more are big-endian; narrower ones are packed from the least significant bit of a byte.

Allocation hands out the lowest free cluster at or after a hint. Changed blocks stay in memory
(dirty) until the driver's ordered metadata flush writes them, *before* the tables that point at
the new clusters (with lazy refcounts a flush leaves them while the image is dirty: dirty.py).
Decrements are deferred: :meth:`defer_free` queues them and the flush applies them only after
the tables that dropped the references are durable. So a crash at any point can leak a cluster
but never leave a reference to a free one (with accurate refcounts).

A new refcount block describes itself: it goes in the first free cluster of the range it covers,
is written and flushed, then the table entry is written. When the table is full, a larger table
is built at the end of the file together with the blocks that cover it, written and flushed, the
header is switched to it, and the old table's clusters are queued for freeing.
"""

from __future__ import annotations

import contextlib
import errno
import struct
from collections.abc import Callable

from rig.errors import RigError
from rig.formats.qcow2.metaio import MetaIO
from rig.formats.qcow2.overlap import Ol

OFFSET_MASK = 0xFFFF_FFFF_FFFF_FE00
#: QEMU's limit on the refcount table.
MAX_TABLE_BYTES = 8 << 20


class Refcounts:
    def __init__(self, io: MetaIO, order: int, table_offset: int, table_clusters: int,
                 set_table: Callable[[int, int], None]) -> None:
        if not 0 <= order <= 6:
            raise io.corrupt(f"refcount_order {order} is outside 0..6")
        if table_clusters < 1:
            raise io.corrupt("refcount table has no clusters")
        self.io = io
        self.order = order
        self.bits = 1 << order
        self.max = (1 << self.bits) - 1
        cs = io.cluster_size
        self.per_block = cs * 8 // self.bits
        self._set_table = set_table
        io.check_table(table_offset, table_clusters * cs, "refcount table")
        io.claim(table_offset, table_clusters * cs, Ol.REFCOUNT_TABLE)
        self.table_offset = table_offset
        self.table_clusters = table_clusters
        self.table = io.read(table_offset, table_clusters * cs)
        self.entries = table_clusters * cs // 8
        self._blocks: dict[int, bytearray] = {}
        self.dirty: set[int] = set()
        """Offsets of blocks changed since they were last written."""
        self.deferred: list[int] = []
        """Clusters whose refcount drops by one at the next metadata flush."""
        self.hint = 0
        raw = struct.unpack_from(f">{self.entries}Q", self.table)  # one call, not one per entry
        for i, value in ((i, v) for i, v in enumerate(raw) if v):  # one C loop skips the zeroes
            off = value & OFFSET_MASK
            if value & ~OFFSET_MASK & ((1 << 64) - 1):
                raise io.corrupt(f"refcount table entry {i} has reserved bits set")
            io.claim(off, cs, Ol.REFCOUNT_BLOCK)  # unaligned: found when used (QEMU's way)

    # ------------------------------------------------------------ entries
    def _table_entry(self, index: int) -> int:
        return int(struct.unpack_from(">Q", self.table, index * 8)[0]) & OFFSET_MASK

    def _block_offset(self, index: int) -> int:
        """Refcount table entry ``index`` about to be used (0: no block): an unaligned block
        is a corruption event, as in QEMU (which opens such an image and signals it here)."""
        off = self._table_entry(index)
        if off % self.io.cluster_size:
            raise self.io.event(f"Refblock offset {_c_hex(off)} unaligned (reftable index: "
                                f"{_c_hex(index)})")
        return off

    def _block(self, offset: int) -> bytearray:
        block = self._blocks.get(offset)
        if block is None:
            block = self.io.read(offset, self.io.cluster_size)
            self._blocks[offset] = block
        return block

    def _entry_bytes(self, index: int) -> tuple[int, int]:
        if self.bits >= 8:
            n = self.bits // 8
            return index * n, index * n + n
        b = index * self.bits // 8
        return b, b + 1

    def _get_in(self, block: bytearray, index: int) -> int:
        if self.bits >= 8:
            a, b = self._entry_bytes(index)
            return int.from_bytes(block[a:b], "big")
        per_byte = 8 // self.bits
        return (block[index // per_byte] >> (index % per_byte) * self.bits) & self.max

    def _put_in(self, block: bytearray, index: int, value: int) -> None:
        if self.bits >= 8:
            a, b = self._entry_bytes(index)
            block[a:b] = value.to_bytes(b - a, "big")
            return
        per_byte = 8 // self.bits
        shift = (index % per_byte) * self.bits
        i = index // per_byte
        block[i] = (block[i] & ~(self.max << shift) & 0xFF) | (value << shift)

    def get(self, cluster: int) -> int:
        bi, i = divmod(cluster, self.per_block)
        if bi >= self.entries:
            return 0
        off = self._block_offset(bi)
        return self._get_in(self._block(off), i) if off else 0

    def _set(self, cluster: int, value: int) -> None:
        bi, i = divmod(cluster, self.per_block)
        off = self._block_for_update(bi, cluster)
        self._put_in(self._block(off), i, value)
        self.dirty.add(off)

    def _block_for_update(self, bi: int, cluster: int) -> int:
        """The offset of refcount block ``bi``, created (and the table grown) if needed: QEMU's
        alloc_refcount_block, with its events (``refblock_alloc``, then ``refblock_load`` for
        an existing block)."""
        emit = self.io.emit
        emit("refblock_alloc")
        off = self._block_offset(bi) if bi < self.entries else 0
        if off:
            emit("refblock_load")
            return off
        if bi >= self.entries:
            self._grow(cluster)
        off = self._block_offset(bi)
        if not off:
            off = self._new_block(bi, cluster)
        return off

    # --------------------------------------------------------- public api
    def update(self, cluster: int, delta: int) -> int:
        """Add ``delta`` to a cluster's refcount; the new value."""
        old = self.get(cluster)
        new = old + delta
        if new < 0:
            raise self.io.corrupt(f"refcount of cluster 0x{cluster << self.io.cluster_bits:x} "
                                  "would drop below zero")
        if new > self.max:
            raise self.io.corrupt(f"refcount of cluster 0x{cluster << self.io.cluster_bits:x} "
                                  f"would exceed {self.max}")
        self._set(cluster, new)
        if new == 0 and cluster < self.hint:
            self.hint = cluster
        return new

    def alloc(self) -> int:
        """Allocate one cluster (refcount 1); its byte offset."""
        self.io.emit("cluster_alloc")
        c = self._find_free(self.hint)
        self.hint = c + 1
        self._set(c, 1)
        return c << self.io.cluster_bits

    def find_free(self) -> int:
        """The first free cluster at or after the hint, not allocated (QEMU's
        alloc_clusters_noref of one cluster)."""
        return self._find_free(self.hint)

    def alloc_clusters(self, count: int) -> int:
        """Allocate ``count`` contiguous clusters (QEMU's qcow2_alloc_clusters of a table);
        the byte offset of the first."""
        self.io.emit("cluster_alloc")
        c = self._find_free(self.hint)
        while True:
            # the blocks describing the run first: a new one may land inside it
            for bi in range(c // self.per_block, (c + count - 1) // self.per_block + 1):
                self._block_for_update(bi, c)
            busy = next((j for j in range(count) if self.get(c + j)), None)
            if busy is None:
                break
            c = self._find_free(c + busy + 1)
        done = 0
        try:
            for j in range(count):
                self._set(c + j, 1)
                done += 1
        except BaseException:
            with contextlib.suppress(OSError, RigError):
                for j in range(done):
                    self.update(c + j, -1)
            raise
        self.hint = c + count
        return c << self.io.cluster_bits

    def defer_free(self, cluster: int) -> None:
        self.deferred.append(cluster)

    def free_now(self, cluster: int) -> None:
        """QEMU's qcow2_free_clusters for a cluster nothing durable references (an allocation
        given back): the decrement at once, in the cached block."""
        self.io.emit("cluster_free")
        self.update(cluster, -1)

    def apply_deferred(self) -> list[int]:
        """Apply the queued decrements (in memory); the clusters that became free."""
        freed = []
        todo, self.deferred = self.deferred, []
        for i, c in enumerate(todo):
            try:
                self.io.emit("cluster_free")
                if self.update(c, -1) == 0:
                    freed.append(c)
            except BaseException:
                self.deferred = todo[i + 1:] + self.deferred
                raise
        return freed

    def write_dirty(self) -> None:
        for off in sorted(self.dirty):
            self.io.emit("refblock_update_part")
            self.io.write(off, self._blocks[off], ignore=Ol.REFCOUNT_BLOCK)
            self.dirty.discard(off)

    def alloc_run(self, want: int) -> tuple[int, int]:
        """Allocate up to ``want`` contiguous clusters (at least one); (byte offset, count).
        The run stays inside one existing refcount block, whose entries are written at once."""
        self.io.emit("cluster_alloc")
        c = self._find_free(self.hint)
        bi, i = divmod(c, self.per_block)
        off = self._block_offset(bi) if bi < self.entries else 0
        if not off or want == 1:
            self.hint = c + 1
            self._set(c, 1)
            return c << self.io.cluster_bits, 1
        self.io.emit("refblock_alloc")
        self.io.emit("refblock_load")
        block = self._block(off)
        n = 1
        limit = min(want, self.per_block - i)
        # metadata the refcounts call free is handed out too (QEMU's allocator knows nothing
        # else): the write that follows fails the overlap check
        if self.bits >= 8:  # whole bytes: find the free entries and set them with slices
            w = self.bits // 8
            seg = block[(i + 1) * w:(i + limit) * w]
            n = 1 + (len(seg) - len(seg.lstrip(b"\0"))) // w  # c and the zero entries after
            block[i * w:(i + n) * w] = (1).to_bytes(w, "big") * n
        else:
            while n < limit and not self._get_in(block, i + n):
                n += 1
            for j in range(n):
                self._put_in(block, i + j, 1)
        self.dirty.add(off)
        self.hint = c + n
        return c << self.io.cluster_bits, n

    def _find_free(self, start: int) -> int:
        c = start
        while True:
            bi, i = divmod(c, self.per_block)
            off = self._block_offset(bi) if bi < self.entries else 0
            if off:
                found = self._first_zero(self._block(off), i)
                if found is None:
                    c = (bi + 1) * self.per_block
                    continue
                c = bi * self.per_block + found
            # a metadata cluster the refcounts call free is handed out as QEMU does: the write
            # that follows fails the overlap check (unless overlap-check was turned off)
            return c

    def _first_zero(self, block: bytearray, start: int) -> int | None:
        if self.bits >= 8:
            n = self.bits // 8
            zero = bytes(n)
            pos = block.find(zero, start * n)
            while pos >= 0 and pos % n:
                pos = block.find(zero, pos + n - pos % n)
            return None if pos < 0 else pos // n
        for i in range(start, self.per_block):
            if not self._get_in(block, i):
                return i
        return None

    # ---------------------------------------------------------- structure
    def _set_table_entry(self, index: int, offset: int) -> None:
        old = self.table[index * 8:index * 8 + 8]
        struct.pack_into(">Q", self.table, index * 8, offset)
        try:
            self.io.write_slice(self.table_offset, self.table, index * 8, index * 8 + 8,
                                ignore=Ol.REFCOUNT_TABLE)
        except BaseException:
            self.table[index * 8:index * 8 + 8] = old
            raise

    def _new_block(self, bi: int, exclude: int) -> int:
        """A self-describing block for range ``bi`` (which holds no referenced cluster)."""
        first = bi * self.per_block
        c = first if first != exclude else first + 1
        off = c << self.io.cluster_bits
        block = bytearray(self.io.cluster_size)
        self._put_in(block, c - first, 1)
        self.io.emit("refblock_alloc_write")
        self.io.write(off, block, ignore=Ol.REFCOUNT_BLOCK)
        self.io.file.flush()  # the block is on disk before the table points at it
        self.io.emit("refblock_alloc_hookup")
        self._set_table_entry(bi, off)
        self._blocks[off] = block
        self.io.claim(off, self.io.cluster_size, Ol.REFCOUNT_BLOCK)
        self.io.file.flush()  # QEMU's bdrv_pwrite_sync of the table entry
        return off

    def _grow(self, pending: int) -> None:
        """Move to a larger refcount table placed past everything in use (and ``pending``)."""
        cs = self.io.cluster_size
        bits = self.io.cluster_bits
        self.io.emit("reftable_grow")
        file_clusters = -(-self.io.file_end // cs)
        start = max(pending + 1, self.entries * self.per_block, file_clusters,
                    max(self.io.meta, default=0) + 1)
        n = self.table_clusters
        while True:
            n *= 2
            if n * cs > MAX_TABLE_BYTES:  # QEMU's limit (and no table of gigabytes in memory)
                raise OSError(errno.EFBIG, "qcow2: the refcount table would grow past 8 MiB")
            entries = n * cs // 8
            # the table and the blocks covering it, with room to spare
            if (start + n + 8) // self.per_block < entries:
                break
        table = bytearray(n * cs)
        table[:len(self.table)] = self.table
        new_blocks: dict[int, tuple[int, bytearray]] = {}  # block index -> (cluster, block)
        next_free = start + n
        todo = list(range(start, start + n))
        while todo:
            c = todo.pop()
            bi, i = divmod(c, self.per_block)
            if bi in new_blocks:
                block = new_blocks[bi][1]
            elif bi < self.entries and self._table_entry(bi):
                raise self.io.corrupt("refcount table growth would overlap existing blocks")
            else:
                block = bytearray(cs)
                new_blocks[bi] = (next_free, block)
                struct.pack_into(">Q", table, bi * 8, next_free << bits)
                todo.append(next_free)
                next_free += 1
            self._put_in(block, i, 1)
        # QEMU's qcow2_refcount_area: blocks, table, header, each written and flushed; nothing
        # in memory changes until the header names the new table
        self.io.emit("refblock_alloc_write_blocks")
        for c, block in new_blocks.values():
            self.io.write(c << bits, block, ignore=Ol.REFCOUNT_BLOCK)
        self.io.file.flush()
        self.io.emit("refblock_alloc_write_table")
        self.io.write(start << bits, table, ignore=Ol.REFCOUNT_TABLE)
        self.io.file.flush()  # the new table and blocks are on disk before the header says so
        old_offset, old_clusters = self.table_offset, self.table_clusters
        self.io.emit("refblock_alloc_switch_table")
        self._set_table(start << bits, n)
        for c, block in new_blocks.values():
            self._blocks[c << bits] = block
            self.io.claim(c << bits, cs, Ol.REFCOUNT_BLOCK)
        self.io.release(old_offset, old_clusters * cs, Ol.REFCOUNT_TABLE)
        self.io.claim(start << bits, n * cs, Ol.REFCOUNT_TABLE)
        self.table, self.table_offset, self.table_clusters, self.entries = (
            table, start << bits, n, entries)
        for k in range(old_clusters):
            self.defer_free((old_offset >> bits) + k)
        self.io.file.flush()  # QEMU's bdrv_pwrite_sync of the header


def _c_hex(value: int) -> str:
    """C's ``%#x``: ``0x1f``, but ``0`` for zero."""
    return f"{value:#x}" if value else "0"
