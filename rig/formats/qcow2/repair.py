"""The repair of a dirty image: QEMU 7.2's ``qcow2_check_refcounts`` with ``-r all``
(BDRV_FIX_ERRORS | BDRV_FIX_LEAKS), which ``qcow2_do_open`` runs when it opens an image with the
dirty bit read-write (lazy refcounts after a crash: the L2 tables were written, the refcounts
not).

The references are counted from the image's structures into an in-memory refcount table (the
header, the active and the snapshots' L1 and L2 tables and their clusters, the snapshot table,
the refcount table and blocks), then compared with the refcounts on disk. A cluster referenced
but with refcount 0 means the refcount structure cannot be trusted: it is rebuilt from the
in-memory table (new refcount blocks and table in free clusters, the header switched to them),
the references counted again and the old structure, now leaked, freed. Other differences are
fixed in place. Last, the COPIED flags are made to agree with the refcounts. QEMU's messages
(one ``fprintf`` line each on stderr, no program name) come out in QEMU's order: ``ERROR cluster
5 refcount=0 reference=1``, ``Rebuilding refcount structure``, ``Repairing cluster 1 refcount=1
reference=0``.

Not done (the rig has no such images or does not check them): encryption headers, persistent
bitmaps, the snapshot table's own repair, and the repair of a misaligned preallocated cluster.
"""

from __future__ import annotations

import errno
import os
import struct
import sys
from typing import TYPE_CHECKING

from rig.formats.qcow2 import snapshots
from rig.formats.qcow2.errors import CorruptImageError
from rig.formats.qcow2.metaio import MetaIO
from rig.formats.qcow2.overlap import Ol
from rig.formats.qcow2.report import error_report
from rig.formats.qcow2.tables import (
    COPIED,
    L1_RESERVED,
    L2_RESERVED,
    OFFSET_MASK,
    Kind,
    classify,
    compressed_extent,
)

if TYPE_CHECKING:
    from rig.formats.qcow2.driver import Qcow2Node

FIX_LEAKS = 1
FIX_ERRORS = 2
#: A refcount table entry: the block's offset, and reserved bits 0-8.
REFT_OFFSET_MASK = 0xFFFF_FFFF_FFFF_FE00
REFT_RESERVED_MASK = 0x1FF
MAX_L1_BYTES = 32 << 20


class CheckResult:
    """QEMU's BdrvCheckResult (the counts the repair needs)."""

    def __init__(self) -> None:
        self.corruptions = 0
        self.leaks = 0
        self.check_errors = 0
        self.corruptions_fixed = 0
        self.leaks_fixed = 0

    def copy(self) -> CheckResult:
        new = CheckResult()
        new.__dict__.update(self.__dict__)
        return new


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class _Check:
    """One run of the check on an open node (its metadata already read)."""

    def __init__(self, node: Qcow2Node) -> None:
        assert node.header is not None and node._io is not None
        self.node = node
        self.h = node.header
        self.io: MetaIO = node._io
        self.cb = node.cluster_bits
        self.cs = node.cluster_size
        refs = node.refs
        self.bits = refs.bits
        self.max = refs.max
        self.per_block = refs.per_block
        self.imrt: list[int] = []

    # ------------------------------------------------------- in-memory table
    def _grow(self, size: int) -> None:
        if size > len(self.imrt):
            self.imrt.extend([0] * (size - len(self.imrt)))

    def _get(self, cluster: int) -> int:
        return self.imrt[cluster] if cluster < len(self.imrt) else 0

    def _file_len(self) -> int:
        return self.node.file.getlength()

    def inc(self, res: CheckResult, offset: int, size: int) -> None:
        """QEMU's qcow2_inc_refcounts_imrt."""
        if size <= 0:
            return
        if offset + size - self._file_len() >= self.cs:
            _say("ERROR: counting reference for region exceeding the end of the file by one "
                 f"cluster or more: offset 0x{offset:x} size 0x{size:x}")
            res.corruptions += 1
            return
        first = offset >> self.cb
        last = (offset + size - 1) >> self.cb
        self._grow(last + 1)
        for k in range(first, last + 1):
            if self.imrt[k] == self.max:
                _say(f"ERROR: overflow cluster offset=0x{k << self.cb:x}")
                _say("Use qemu-img amend to increase the refcount entry width or qemu-img "
                     "convert to create a clean copy if the image cannot be opened for writing")
                res.corruptions += 1
                continue
            self.imrt[k] += 1

    # ------------------------------------------------------------ counting
    def _l2(self, res: CheckResult, l2_offset: int) -> None:
        """QEMU's check_refcounts_l2 (without the repair of misaligned preallocated
        clusters)."""
        raw = self.io.read(l2_offset, self.cs)
        version = self.node.tables.version  # with DATA_FILE_MODE
        data_file = self.node.has_data_file
        for i, entry in enumerate(struct.unpack(f">{self.cs // 8}Q", raw)):
            kind = classify(entry, version)
            if kind is not Kind.COMPRESSED and entry & L2_RESERVED:
                _say(f"ERROR found l2 entry with reserved bits set: {entry:x}")
                res.corruptions += 1
            if kind is Kind.COMPRESSED:
                if entry & COPIED:
                    coffset = compressed_extent(entry, self.cb)[0]
                    _say(f"ERROR: coffset=0x{coffset:x}: copied flag must never be set for "
                         "compressed clusters")
                    entry &= ~COPIED
                    res.corruptions += 1
                if data_file:
                    _say(f"ERROR compressed cluster {i} with data file, entry=0x{entry:x}")
                    res.corruptions += 1
                    continue
                coffset, csize = compressed_extent(entry, self.cb)
                self.inc(res, coffset, csize)
            elif kind in (Kind.NORMAL, Kind.ZERO_ALLOC):
                offset = entry & OFFSET_MASK
                if offset % self.cs:
                    res.corruptions += 1
                    if kind is Kind.ZERO_ALLOC:
                        _say(f"ERROR offset={offset:x}: Preallocated cluster is not properly "
                             "aligned; L2 entry corrupted.")
                    else:
                        _say(f"ERROR offset={offset:x}: Data cluster is not properly aligned; "
                             "L2 entry corrupted.")
                if not data_file:  # data clusters in a data file have no refcounts
                    self.inc(res, offset, self.cs)

    def _l1(self, res: CheckResult, l1_offset: int, l1_size: int) -> None:
        """QEMU's check_refcounts_l1."""
        if not l1_size:
            return
        self.inc(res, l1_offset, l1_size * 8)
        raw = self.io.read(l1_offset, l1_size * 8)
        for entry in struct.unpack(f">{l1_size}Q", raw):
            if not entry:
                continue
            if entry & L1_RESERVED:
                _say(f"ERROR found L1 entry with reserved bits set: {entry:x}")
                res.corruptions += 1
            l2_offset = entry & OFFSET_MASK
            self.inc(res, l2_offset, self.cs)
            if l2_offset % self.cs:
                _say(f"ERROR l2_offset={l2_offset:x}: Table is not cluster aligned; L1 entry "
                     "corrupted")
                res.corruptions += 1
            self._l2(res, l2_offset)

    def _refblocks(self, res: CheckResult, fix: int) -> bool:
        """QEMU's check_refblocks; True when the structure must be rebuilt."""
        rebuild = False
        refs = self.node.refs
        for i, value in enumerate(struct.unpack(f">{refs.entries}Q", refs.table)):
            offset = value & REFT_OFFSET_MASK
            cluster = offset >> self.cb
            if value & REFT_RESERVED_MASK:
                _say(f"ERROR refcount table entry {i} has reserved bits set")
                res.corruptions += 1
                rebuild = True
                continue
            if offset % self.cs:
                _say(f"ERROR refcount block {i} is not cluster aligned; refcount table entry "
                     "corrupted")
                res.corruptions += 1
                rebuild = True
                continue
            if cluster >= len(self.imrt) and offset:
                res.corruptions += 1
                _say(f"{'Repairing' if fix & FIX_ERRORS else 'ERROR'} refcount block {i} is "
                     "outside image")
                if fix & FIX_ERRORS:
                    try:
                        self.node.file.truncate(offset + self.cs)
                    except OSError as e:
                        rebuild = True
                        _say("ERROR could not resize image: "
                             f"{os.strerror(e.errno or errno.EIO)}")
                        continue
                    self._grow(-(-self._file_len() // self.cs))
                    res.corruptions -= 1
                    res.corruptions_fixed += 1
                    self.inc(res, offset, self.cs)
                continue
            if offset:
                self.inc(res, offset, self.cs)
                if self._get(cluster) != 1:
                    _say(f"ERROR refcount block {i} refcount={self._get(cluster)}")
                    res.corruptions += 1
                    rebuild = True
        return rebuild

    def calculate(self, res: CheckResult, fix: int) -> bool:
        """QEMU's calculate_refcounts into a fresh in-memory table; True: rebuild."""
        self.imrt = [0] * -(-self._file_len() // self.cs)
        h = self.h
        self.inc(res, 0, self.cs)
        self._l1(res, h.l1_table_offset, h.l1_size)
        for sn in self.node.snapshots:
            if sn.l1_offset % self.cs:
                _say(f"ERROR snapshot ({sn.name}) l1_offset={sn.l1_offset:#x}: L1 table is not "
                     "cluster aligned; snapshot table entry corrupted")
                res.corruptions += 1
                continue
            if sn.l1_size > MAX_L1_BYTES // 8:
                _say(f"ERROR snapshot ({sn.name}) l1_size={sn.l1_size:#x}: L1 table is too "
                     "large; snapshot table entry corrupted")
                res.corruptions += 1
                continue
            self._l1(res, sn.l1_offset, sn.l1_size)
        if h.nb_snapshots:
            scratch = MetaIO(self.node.file, self.node.path, self.cb)
            length = snapshots.read_table(scratch, h.snapshots_offset, h.nb_snapshots)[1]
            self.inc(res, h.snapshots_offset, length)
        refs = self.node.refs
        self.inc(res, refs.table_offset, refs.table_clusters * self.cs)
        return self._refblocks(res, fix)

    # ----------------------------------------------------------- comparing
    def compare(self, res: CheckResult, fix: int) -> bool:
        """QEMU's compare_refcounts; True when a referenced cluster has refcount 0."""
        refs = self.node.refs
        rebuild = False
        freed: list[int] = []
        for i in range(len(self.imrt)):
            try:
                on_disk = refs.get(i)
            except (CorruptImageError, OSError):
                _say(f"Can't get refcount for cluster {i}: Input/output error")
                res.check_errors += 1
                continue
            counted = self.imrt[i]
            if on_disk == counted:
                continue
            fixing = False
            if on_disk == 0:
                rebuild = True
            else:
                fixing = bool(fix & (FIX_LEAKS if on_disk > counted else FIX_ERRORS))
            word = "Repairing" if fixing else "ERROR" if on_disk < counted else "Leaked"
            _say(f"{word} cluster {i} refcount={on_disk} reference={counted}")
            if fixing:
                try:
                    refs.update(i, counted - on_disk)
                except (CorruptImageError, OSError):
                    pass
                else:
                    if on_disk > counted:
                        res.leaks_fixed += 1
                    else:
                        res.corruptions_fixed += 1
                    if counted == 0:
                        freed.append(i)
                    continue
            if on_disk < counted:
                res.corruptions += 1
            else:
                res.leaks += 1
        if freed:
            refs.write_dirty()
            for c in freed:  # QCOW2_DISCARD_ALWAYS
                self.node._discard_host(c << self.cb, self.cs)
        return rebuild

    # ----------------------------------------------------------- rebuilding
    def _alloc(self, count: int, first_free: int) -> tuple[int, int]:
        """QEMU's alloc_clusters_imrt: ``count`` contiguous free clusters from ``first_free``
        (the table grows past its end when needed); (byte offset, the first gap seen)."""
        cluster = first_free
        first_gap = True
        contiguous = 0
        size = len(self.imrt)
        while cluster < size and contiguous < count:
            if not self.imrt[cluster]:
                contiguous += 1
                if first_gap:
                    first_free = cluster
                    first_gap = False
            elif contiguous:
                contiguous = 0
            cluster += 1
        if contiguous < count:
            self._grow(cluster + count - contiguous)
        cluster -= contiguous
        for k in range(count):
            self.imrt[cluster + k] = 1
        return cluster << self.cb, first_free

    def _block_bytes(self, index: int) -> bytes:
        """Refcount block ``index`` as it goes on disk: a slice of the in-memory table."""
        n = self.per_block
        values = self.imrt[index * n:(index + 1) * n]
        values += [0] * (n - len(values))
        if self.bits >= 8:
            w = self.bits // 8
            return b"".join(v.to_bytes(w, "big") for v in values)
        out = bytearray(self.cs)
        per_byte = 8 // self.bits
        for k, v in enumerate(values):
            if v:
                out[k // per_byte] |= v << (k % per_byte) * self.bits
        return bytes(out)

    def _write_refblocks(self, first: int, end: int, reftable: list[int]) -> bool:
        """QEMU's rebuild_refcounts_write_refblocks: a refcount block for every range of
        ``[first, end)`` holding a used cluster, allocated in the in-memory table and written;
        True when ``reftable`` had to grow."""
        grown = False
        first_free = 0
        cluster = first
        n = self.per_block
        while cluster < end:
            if not self._get(cluster):
                cluster += 1
                continue
            index = cluster // n
            start = index * n
            if index < len(reftable) and reftable[index]:
                offset = reftable[index]
            else:
                first_free = max(first_free, start)
                offset, first_free = self._alloc(1, first_free)
                if offset >> self.cb >= end:
                    end = (offset >> self.cb) + 1
                if len(reftable) <= index:
                    entries = -(-((index + 1) * 8) // self.cs) * self.cs // 8
                    reftable.extend([0] * (entries - len(reftable)))
                    grown = True
                reftable[index] = offset
            try:
                self.io.write(offset, self._block_bytes(index))
            except (CorruptImageError, OSError) as e:
                raise _RebuildError("ERROR writing refblock", e) from None
            cluster = start + n
        return grown

    def rebuild(self) -> None:
        """QEMU's rebuild_refcount_structure."""
        reftable: list[int] = []
        grown = self._write_refblocks(0, len(self.imrt), reftable)
        assert grown
        offset = clusters = 0
        while grown:
            clusters = -(-len(reftable) * 8 // self.cs)
            offset = self._alloc(clusters, 0)[0]
            start = offset >> self.cb
            grown = self._write_refblocks(start, start + clusters, reftable)
        data = struct.pack(f">{len(reftable)}Q", *reftable)
        io = self.io
        try:
            io.write(offset, data)
        except (CorruptImageError, OSError) as e:
            raise _RebuildError("ERROR writing reftable", e) from None
        try:
            self.node._set_reftable(offset, clusters)  # the header names the new table
            self.node.file.flush()
        except (CorruptImageError, OSError) as e:
            raise _RebuildError("ERROR setting reftable", e) from None
        self.node._use_reftable(offset, clusters)

    # ------------------------------------------------------------ COPIED
    def oflag_copied(self, res: CheckResult, fix: int) -> None:
        """QEMU's check_oflag_copied: the COPIED flags of the active L1 and L2 entries agree
        with the refcounts (repaired with FIX_ERRORS, or with FIX_LEAKS when all else is
        clean)."""
        if fix & FIX_ERRORS:
            repair = True
        elif fix & FIX_LEAKS:
            repair = not (res.check_errors or res.corruptions or res.leaks)
        else:
            repair = False
        node, io = self.node, self.io
        refs, tables = node.refs, node.tables
        word = "Repairing" if repair else "ERROR"
        for i in range(tables.l1_size):
            l1e = tables.l1_entry(i)
            l2_offset = l1e & OFFSET_MASK
            if not l2_offset:
                continue
            try:
                refcount = refs.get(l2_offset >> self.cb)
            except (CorruptImageError, OSError):
                continue
            if (refcount == 1) != bool(l1e & COPIED):
                res.corruptions += 1
                _say(f"{word} OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={l1e:x} "
                     f"refcount={refcount}")
                if repair:
                    fixed = l1e | COPIED if refcount == 1 else l1e & ~COPIED
                    struct.pack_into(">Q", tables.l1, i * 8, fixed)
                    try:
                        io.write_slice(tables.l1_offset, tables.l1, i * 8, i * 8 + 8,
                                       ignore=Ol.ACTIVE_L1)
                    except (CorruptImageError, OSError):
                        res.check_errors += 1
                        return
                    res.corruptions -= 1
                    res.corruptions_fixed += 1
            try:
                raw = io.read(l2_offset, self.cs)
            except OSError as e:
                _say(f"ERROR: Could not read L2 table: {os.strerror(e.errno or errno.EIO)}")
                res.check_errors += 1
                return
            table = bytearray(raw)
            dirty = 0
            for j, entry in enumerate(struct.unpack(f">{self.cs // 8}Q", raw)):
                if classify(entry, tables.version) not in (Kind.NORMAL, Kind.ZERO_ALLOC):
                    continue
                try:
                    refcount = 1 if node.has_data_file else refs.get(
                        (entry & OFFSET_MASK) >> self.cb)
                except (CorruptImageError, OSError):
                    continue
                if (refcount == 1) != bool(entry & COPIED):
                    res.corruptions += 1
                    _say(f"{word} OFLAG_COPIED data cluster: l2_entry={entry:x} "
                         f"refcount={refcount}")
                    if repair:
                        fixed = entry | COPIED if refcount == 1 else entry & ~COPIED
                        struct.pack_into(">Q", table, j * 8, fixed)
                        dirty += 1
            if dirty:
                try:
                    io.write(l2_offset, table, ignore=Ol.ACTIVE_L2)
                except (CorruptImageError, OSError) as e:
                    errno_ = e.errno if isinstance(e, OSError) else errno.EIO
                    _say(f"ERROR: Could not write L2 table: {os.strerror(errno_ or errno.EIO)}")
                    res.check_errors += 1
                    return
                res.corruptions -= dirty
                res.corruptions_fixed += dirty


class _RebuildError(Exception):
    def __init__(self, what: str, cause: BaseException) -> None:
        code = cause.errno if isinstance(cause, OSError) and cause.errno else errno.EIO
        super().__init__(f"{what}: {os.strerror(code)}")


def check_refcounts(node: Qcow2Node, fix: int) -> CheckResult:
    """QEMU's qcow2_check_refcounts: count, compare, rebuild or fix, check COPIED."""
    res = CheckResult()
    chk = _Check(node)
    rebuild = chk.calculate(res, fix)
    pre_compare = res.copy()
    rebuild = chk.compare(res, 0) or rebuild
    if rebuild and fix & FIX_ERRORS:
        old = res.copy()
        _say("Rebuilding refcount structure")
        try:
            chk.rebuild()
        except _RebuildError as e:
            error_report(str(e))
            res.check_errors += 1
            return res
        res.corruptions = res.leaks = 0
        chk = _Check(node)
        chk.calculate(res, 0)
        fresh_leaks = 0
        if fix & FIX_LEAKS:
            saved = res.copy()
            leak_res = CheckResult()
            if chk.compare(leak_res, FIX_LEAKS):
                _say("ERROR rebuilt refcount structure is still broken")
            fresh_leaks = leak_res.leaks
            res = saved
        if res.corruptions < old.corruptions:
            res.corruptions_fixed += old.corruptions - res.corruptions
        if res.leaks < old.leaks:
            res.leaks_fixed += old.leaks - res.leaks
        res.leaks += fresh_leaks
    elif fix:
        if rebuild:
            _say("ERROR need to rebuild refcount structures")
            res.check_errors += 1
            return res
        if res.leaks or res.corruptions:
            res = pre_compare
            chk.compare(res, fix)
    chk.oflag_copied(res, fix)
    return res
