"""L1 and L2 tables: guest cluster -> host cluster, zero clusters and compressed clusters.

An L1 entry holds the offset of an L2 table (bits 9..55) and the COPIED flag (bit 63: refcount
is exactly 1, so it may be written in place). An L2 entry is one of:

* unallocated: 0 (reads come from the backing file, or zeroes);
* a zero cluster (v3, bit 0): reads zeroes; it may still own a host cluster (``ZERO_ALLOC``);
* normal: the host offset (bits 9..55), COPIED when written in place is allowed;
* compressed (bit 62): a host *byte* offset and a sector count packed by cluster size.

The L1 table is cached whole; L2 tables are cached in an LRU bounded by bytes. Changes stay in
the cache (dirty) until the driver's ordered metadata flush writes them: every dirty L2 table,
then (after a flush of the file, so no L1 entry can point at an unwritten table) the dirty part of
the L1 table. Dirty tables are never evicted.
"""

from __future__ import annotations

import struct
import zlib
from collections import OrderedDict
from enum import Enum
from functools import reduce
from operator import or_

from rig.formats.qcow2.metaio import MetaIO
from rig.formats.qcow2.overlap import Ol

COPIED = 1 << 63
COMPRESSED = 1 << 62
ZERO = 1
OFFSET_MASK = 0x00FF_FFFF_FFFF_FE00
#: Bits an L1 entry may have besides its offset and COPIED (all reserved: must be zero).
L1_RESERVED = ~(OFFSET_MASK | COPIED) & (2**64 - 1)
L2_RESERVED = ~(OFFSET_MASK | COPIED | ZERO) & (2**64 - 1)

L2_CACHE_BYTES = 32 << 20

_U64 = struct.Struct(">Q")
_U64S: dict[int, struct.Struct] = {}


def _u64s(count: int) -> struct.Struct:
    """A compiled ``>{count}Q`` (a walk asks for the same few counts again and again)."""
    st = _U64S.get(count)
    if st is None:
        st = struct.Struct(f">{count}Q")
        if len(_U64S) < 256:  # bounded: counts up to an L2 table's entries are possible
            _U64S[count] = st
    return st


class Kind(Enum):
    UNALLOCATED = "unallocated"
    ZERO_PLAIN = "zero"
    ZERO_ALLOC = "zero-allocated"
    NORMAL = "normal"
    COMPRESSED = "compressed"


#: Added to the version given to :func:`classify` (and kept in :attr:`Tables.version`) for an
#: image with an external data file (always v3): there offset 0 is a real data cluster, told
#: from an unallocated one by COPIED (every data cluster has refcount 1), as QEMU's
#: qcow2_get_cluster_type.
DATA_FILE_MODE = 0x100


def classify(entry: int, version: int) -> Kind:
    if entry & COMPRESSED:
        return Kind.COMPRESSED
    if entry & ZERO and version >= 3:
        return Kind.ZERO_ALLOC if entry & OFFSET_MASK else Kind.ZERO_PLAIN
    if entry & OFFSET_MASK or (version & DATA_FILE_MODE and entry & COPIED):
        return Kind.NORMAL
    return Kind.UNALLOCATED


def compressed_extent(entry: int, cluster_bits: int) -> tuple[int, int]:
    """(host byte offset, bytes to read) of a compressed cluster's data."""
    shift = 62 - (cluster_bits - 8)
    offset = entry & ((1 << shift) - 1)
    sectors = ((entry >> shift) & ((1 << (cluster_bits - 8)) - 1)) + 1
    return offset, sectors * 512 - (offset & 511)


def compressed_span(entry: int, cluster_bits: int) -> tuple[int, int]:
    """(first host cluster, last host cluster) whose refcounts a compressed cluster holds."""
    offset, length = compressed_extent(entry, cluster_bits)
    start = offset & ~511
    end = start + ((length + (offset & 511) + 511) & ~511)
    return start >> cluster_bits, (end - 1) >> cluster_bits


def decompress(data: bytes, cluster_size: int) -> bytes | None:
    """QEMU's zlib compression: raw deflate, 4 KiB window. None when the data is bad."""
    try:
        out = zlib.decompressobj(-12).decompress(data, cluster_size)
    except zlib.error:
        return None
    return out if len(out) == cluster_size else None


class Tables:
    """The L1 table and the L2 cache of one image."""

    def __init__(self, io: MetaIO, version: int, l1_offset: int, l1_size: int) -> None:
        self.io = io
        self.version = version
        cs = io.cluster_size
        self.l2_entries = cs // 8
        self.l1_offset = l1_offset
        self.l1_size = l1_size
        io.check_table(l1_offset, l1_size * 8, "L1 table")
        if l1_size:
            io.claim(l1_offset, l1_size * 8, Ol.ACTIVE_L1)
        self.l1 = io.read(l1_offset, -(-(l1_size * 8) // cs) * cs) if l1_size else bytearray()
        self._l2: OrderedDict[int, bytearray] = OrderedDict()
        self._last: tuple[int, bytearray] | None = None
        """The table :meth:`l2_table` returned last, which is the LRU's newest already (a
        cluster walk asks for the same table many times: no reordering needed)."""
        self.dirty_l2: set[int] = set()
        self.l1_dirty: set[int] = set()
        self.l2_cap = max(4, L2_CACHE_BYTES // cs)
        """How many L2 tables stay cached (dirty ones are never evicted)."""
        raw = _u64s(l1_size).unpack_from(self.l1) if l1_size else ()
        for i, entry in ((i, e) for i, e in enumerate(raw) if e):  # one C loop skips the zeroes
            if entry & L1_RESERVED:
                raise io.corrupt(f"L1 entry {i} has reserved bits set (0x{entry:016x})")
            off = entry & OFFSET_MASK
            if off:
                if off % cs:
                    raise io.corrupt(f"L2 table {i} offset 0x{off:x} is not cluster aligned")
                io.claim(off, cs, Ol.ACTIVE_L2)

    # ---------------------------------------------------------------- L1
    def l1_entry(self, index: int) -> int:
        entry: int = _U64.unpack_from(self.l1, index * 8)[0]
        return entry

    def replace_l1(self, offset: int, size: int, table: bytearray) -> None:
        """Switch to a new L1 table (grown: QEMU's qcow2_grow_l1_table), already on disk."""
        io = self.io
        if self.l1_size:
            io.release(self.l1_offset, self.l1_size * 8, Ol.ACTIVE_L1)
        io.claim(offset, size * 8, Ol.ACTIVE_L1)
        self.l1, self.l1_offset, self.l1_size = table, offset, size
        self.l1_dirty.clear()

    def set_l1_entry(self, index: int, value: int) -> None:
        struct.pack_into(">Q", self.l1, index * 8, value)
        self.l1_dirty.add(index)

    # ---------------------------------------------------------------- L2
    def split(self, guest_cluster: int) -> tuple[int, int]:
        """(L1 index, L2 index) of a guest cluster number."""
        return divmod(guest_cluster, self.l2_entries)

    def l2_table(self, l2_offset: int) -> bytearray:
        last = self._last
        if last is not None and last[0] == l2_offset:
            return last[1]
        table = self._l2.get(l2_offset)
        if table is not None:
            self._l2.move_to_end(l2_offset)
            self._last = (l2_offset, table)
            return table
        self.io.emit("l2_load")
        table = self.io.read(l2_offset, self.io.cluster_size)
        self._cache(l2_offset, table)
        return table

    def _cache(self, l2_offset: int, table: bytearray) -> None:
        fresh = l2_offset not in self._l2
        self._l2[l2_offset] = table
        # a new key is the newest entry (and never the one evicted); a replaced one keeps its
        # place, so the next l2_table moves it
        self._last = (l2_offset, table) if fresh else None
        if len(self._l2) > self.l2_cap:
            for off in self._l2:
                if off not in self.dirty_l2 and off != l2_offset:
                    del self._l2[off]
                    break

    def put_l2(self, l2_offset: int, table: bytearray) -> None:
        """Cache a new table (dirty: it is written by the next metadata flush)."""
        self._cache(l2_offset, table)
        self.dirty_l2.add(l2_offset)

    def drop_l2(self, l2_offset: int) -> None:
        """Forget a cached table (a new table whose allocation failed)."""
        self._l2.pop(l2_offset, None)
        self.dirty_l2.discard(l2_offset)
        if self._last is not None and self._last[0] == l2_offset:
            self._last = None

    @property
    def dirty_bytes(self) -> int:
        return len(self.dirty_l2) * self.io.cluster_size

    def write_l2s(self) -> None:
        for off in sorted(self.dirty_l2):
            self.io.emit("l2_update")
            self.io.write(off, self._l2[off], ignore=Ol.ACTIVE_L2)
            self.dirty_l2.discard(off)

    def write_l1(self, *, event: bool = True) -> None:
        if self.l1_dirty:
            lo, hi = min(self.l1_dirty), max(self.l1_dirty)
            if event:
                self.io.emit("l1_update")
            self.io.write_slice(self.l1_offset, self.l1, lo * 8, hi * 8 + 8,
                                ignore=Ol.ACTIVE_L1)
            self.l1_dirty.clear()

    def l2_entry(self, guest_cluster: int) -> int:
        """The L2 entry of a guest cluster (0 when its L2 table is not allocated)."""
        i1, i2 = divmod(guest_cluster, self.l2_entries)
        if i1 >= self.l1_size:  # the vmstate area past the L1 table (open checked the disk)
            return 0
        l2_offset = _U64.unpack_from(self.l1, i1 * 8)[0] & OFFSET_MASK
        if not l2_offset:
            return 0
        entry: int = _U64.unpack_from(self.l2_table(l2_offset), i2 * 8)[0]
        if not entry & COMPRESSED and entry & L2_RESERVED:
            raise self.io.corrupt(f"L2 entry for guest cluster {guest_cluster} has reserved "
                                  f"bits set (0x{entry:016x})")
        return entry

    def l2_entry_run(self, guest_cluster: int, count: int) -> list[int]:
        """The L2 entries of ``count`` consecutive guest clusters from ``guest_cluster``, all
        inside its L2 table (the caller stops at the table's end), checked as
        :meth:`l2_entry` checks one. One lookup of the table for all of them: the cluster
        walks of reads, writes and block status ask for runs."""
        entries = self.l2_raw_run(guest_cluster, count)
        self.check_l2(guest_cluster, entries, 0, len(entries))
        return entries

    def l2_raw_run(self, guest_cluster: int, count: int) -> list[int]:
        """:meth:`l2_entry_run` without the reserved-bit check (at least one entry): for a
        walk that checks, with :meth:`check_l2`, only the entries it would have looked at."""
        i1, i2 = divmod(guest_cluster, self.l2_entries)
        count = max(1, min(count, self.l2_entries - i2))
        if i1 >= self.l1_size:  # the vmstate area past the L1 table: unallocated
            return [0] * count
        l2_offset = _U64.unpack_from(self.l1, i1 * 8)[0] & OFFSET_MASK
        if not l2_offset:
            return [0] * count
        return list(_u64s(count).unpack_from(self.l2_table(l2_offset), i2 * 8))

    def check_l2(self, guest_cluster: int, entries: list[int], start: int, stop: int) -> None:
        """Corruption when one of ``entries[start:stop]`` (``entries[0]`` belongs to
        ``guest_cluster``) has reserved bits set; the first such entry is named."""
        part = entries[start:stop]
        if not reduce(or_, part, 0) & L2_RESERVED:  # the usual case: one C loop
            return
        for j, entry in enumerate(part, start):
            if not entry & COMPRESSED and entry & L2_RESERVED:
                raise self.io.corrupt(f"L2 entry for guest cluster {guest_cluster + j} has "
                                      f"reserved bits set (0x{entry:016x})")

    def set_l2_entry(self, l2_offset: int, index: int, value: int) -> None:
        struct.pack_into(">Q", self.l2_table(l2_offset), index * 8, value)
        self.dirty_l2.add(l2_offset)

    def set_l2_entries(self, l2_offset: int, index: int, values: list[int]) -> None:
        """Consecutive entries from ``index``."""
        struct.pack_into(f">{len(values)}Q", self.l2_table(l2_offset), index * 8, *values)
        self.dirty_l2.add(l2_offset)
