"""The ``qcow2`` format node: a qcow2 image on its ``file`` child, over an optional ``backing``.

Options: ``file`` (the protocol node), ``backing`` (a node spec, a file name, or ``null`` for
none; without it the backing file named in the header is opened read-only, relative to the
image's directory, with the format from the backing-format extension or probed raw/qcow2).

Concurrency: one lock per node serialises every request, so allocating writes are never torn or
interleaved. Metadata is cached and written by an ordered flush (see :meth:`_flush_metadata`),
so a crash at any point leaves at worst leaked clusters, as with QEMU. Corruption found while
serving a request fails it with EIO (the message says what is corrupt) and makes later writes
fail too, as QEMU marks an image corrupt.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable, Iterator
from functools import reduce
from operator import or_
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from rig.core.buffers import aligned_buffer, iov_copy_in, iov_copy_out, iov_slice
from rig.core.limits import BlockLimits
from rig.core.node import BlockStatus, Iov, Node, ReqFlags
from rig.core.options import Options, flatten
from rig.core.registry import driver_class, register_driver
from rig.errors import ConfigError, RigError
from rig.formats import probe_format
from rig.formats.qcow2 import compress, datafile, dirty, overlap, runtime_opts, snapshots, zstd
from rig.formats.qcow2 import header as hdr
from rig.formats.qcow2.corruption import Corruption
from rig.formats.qcow2.errors import CorruptImageError, UnsupportedImageError
from rig.formats.qcow2.metaio import INT64_MAX, MetaIO
from rig.formats.qcow2.refcount import Refcounts
from rig.formats.qcow2.report import error_report
from rig.formats.qcow2.tables import (
    COMPRESSED,
    COPIED,
    DATA_FILE_MODE,
    L2_CACHE_BYTES,
    OFFSET_MASK,
    ZERO,
    Kind,
    Tables,
    classify,
    compressed_extent,
    compressed_span,
    decompress,
)
from rig.formats.qcow2.truncate import truncate

if TYPE_CHECKING:
    from rig.core.graph import OpenContext

MAX_L1_BYTES = 32 << 20
#: QEMU's limit on the refcount table (8 MiB).
MAX_REFTABLE_BYTES = 8 << 20
MAX_CHAIN = 64
_depth = threading.local()


def _zero(parts: Iov) -> None:
    for buf in parts:
        buf[:] = bytes(buf.nbytes)


@register_driver("qcow2")
class Qcow2Node(Node):
    format_name = "qcow2"
    #: The blkdebug events QEMU 7.2's qcow2 driver sends to its file, each at the point where
    #: QEMU sends it (docs/qcow2.md lists them). Not emitted: empty_image_prepare,
    #: reftable_load and reftable_update (QEMU's make_empty for qemu-img commit, and snapshot
    #: operations: nothing the node does).
    blkdebug_events: ClassVar[frozenset[str]] = frozenset({
        "l1_update", "l1_grow_alloc_table", "l1_grow_write_table", "l1_grow_activate_table",
        "l2_load", "l2_update", "l2_alloc_cow_read", "l2_alloc_write",
        "read_aio", "read_backing_aio", "read_compressed", "write_aio",
        "cow_read", "cow_write", "vmstate_save", "vmstate_load",
        "write_compressed", "l2_update_compressed", "cluster_alloc_bytes",
        "l1_shrink_write_table", "l1_shrink_free_l2_clusters",
        "refblock_load", "refblock_update_part", "refblock_alloc", "refblock_alloc_hookup",
        "refblock_alloc_write", "refblock_alloc_write_blocks", "refblock_alloc_write_table",
        "refblock_alloc_switch_table", "reftable_grow",
        "cluster_alloc", "cluster_free", "cluster_alloc_space",
    })

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.RLock()
        self.path = ""
        self.header: hdr.Header | None = None
        self.cluster_bits = 16
        self.cluster_size = 1 << 16
        self._head = bytearray()
        self._io: MetaIO | None = None
        self._tables: Tables | None = None
        self._refs: Refcounts | None = None
        self._backing_len = 0
        self.corruption = Corruption()
        self._checks = overlap.CACHED
        self._zbuf: tuple[int, bytes] = (0, b"")
        self._discard_after: set[int] = set()
        self._head_used = 0
        self.snapshots: list[snapshots.Snapshot] = []
        self.free_byte_offset = 0
        self._next_host = -1
        """Where the next compressed cluster may go (QEMU's free_byte_offset; 0: nowhere)."""
        self.lazy_refcounts = False
        """QEMU's use_lazy_refcounts: the first allocating write sets the dirty bit, and
        while it is set a flush leaves the refcounts in memory (:mod:`repair` fixes them after
        a crash)."""

    # ------------------------------------------------------------------ open
    @classmethod
    def from_options(cls, opts: Options, ctx: OpenContext) -> Node:
        node = cls(**ctx.node_kwargs())
        try:
            node._checks = overlap.parse(opts)
            node.attach_child("file", ctx.open_child("file"))
            node._open_image()
            assert node.header is not None
            datafile.open_data_file(node, opts, ctx)
            rt = runtime_opts.parse(opts, node.cluster_size, node.header.size)
            dirty.set_lazy_refcounts(node, rt.lazy_refcounts)
            dirty.repair_if_dirty(node)
            node.tables.l2_cap = rt.l2_cache_tables
            node._open_backing(opts, ctx)
            node._clear_autoclear()
        except BaseException:
            node.close()
            raise
        return node

    @property
    def file(self) -> Node:
        return self.children["file"]

    @property
    def backing(self) -> Node | None:
        return self.children.get("backing")

    @property
    def data(self) -> Node:
        """Where guest data clusters live: the external data file, else the image's file."""
        child = self.children.get(datafile.ROLE)
        return child if child is not None else self.children["file"]

    @property
    def has_data_file(self) -> bool:
        return datafile.ROLE in self.children

    def describe(self) -> str:
        return self.file.describe()

    def _open_image(self) -> None:
        self.path = path = self.file.describe()
        try:
            self._read_image()
        except OSError as e:
            raise RigError(f"qcow2 image '{path}': could not read its metadata: "
                           f"{os.strerror(e.errno or errno.EIO)}") from None

    def _read_image(self) -> None:
        path = self.path
        probe = MetaIO(self.file, path, 9)
        first = probe.read(0, min(probe.file_end, 4096))
        try:  # past the end of the file reads as zeroes, as in QEMU
            fixed = hdr.decode_fixed(bytes(first) + bytes(4096 - len(first)))
        except hdr.HeaderError as e:
            if len(first) < 4 or first[:4] != b"QFI\xfb":
                raise ConfigError(f"'{path}': Image is not in qcow2 format") from None
            if "version" in str(e):
                raise UnsupportedImageError(path, str(e).replace("unsupported ", "")) from None
            raise CorruptImageError(path, str(e)) from None
        if not 9 <= fixed.cluster_bits <= 21:
            raise CorruptImageError(path, f"cluster_bits {fixed.cluster_bits} outside 9..21")
        cs = 1 << fixed.cluster_bits
        head = probe.read(0, min(probe.file_end, cs))
        try:
            h = hdr.decode(bytes(head))
        except hdr.HeaderError as e:
            raise CorruptImageError(path, str(e)) from None
        _check_snapshot_table(path, h)
        self._check_supported(h)
        self.header = h
        self.cluster_bits, self.cluster_size = h.cluster_bits, cs
        self._head = bytearray(cs)
        self._head[:len(head)] = head
        try:
            self._head_used = len(hdr.encode(hdr.decode(bytes(head))))
        except hdr.HeaderError:  # does not fit when re-encoded: treat the cluster as used
            self._head_used = cs
        io = self._io = MetaIO(self.file, path, h.cluster_bits, self._checks)
        if h.size >= 1 << 63:
            raise io.corrupt(f"image size {h.size} is too large")
        needed = -(-h.size // (cs * (cs // 8)))
        if h.l1_size < needed:
            raise io.corrupt(f"L1 table ({h.l1_size} entries) is too small for the image size "
                             f"{h.size}")
        if h.l1_size * 8 > MAX_L1_BYTES:
            raise io.corrupt(f"L1 table ({h.l1_size} entries) is too large")
        if h.refcount_table_clusters * cs > MAX_REFTABLE_BYTES:
            raise io.corrupt(f"refcount table ({h.refcount_table_clusters} clusters) is too "
                             "large")
        io.claim(0, cs, overlap.Ol.MAIN_HEADER)
        self._refs = Refcounts(io, h.refcount_order, h.refcount_table_offset,
                               h.refcount_table_clusters, self._set_reftable)
        mode = h.version
        if h.incompatible_features & hdr.INCOMPAT_DATA_FILE:  # (datafile)
            mode |= DATA_FILE_MODE
        self._tables = Tables(io, mode, h.l1_table_offset, h.l1_size)
        self.snapshots = snapshots.read_table(io, h.snapshots_offset, h.nb_snapshots)[0]
        self.refresh_limits()

    def _clear_autoclear(self) -> None:
        """Features we do not maintain become invalid once we write: cleared when the open
        has succeeded (a refused image stays as it was)."""
        assert self.header is not None
        keep = hdr.AUTOCLEAR_DATA_FILE_RAW if self.has_data_file else 0  # maintained (datafile)
        if not self.read_only and self.header.autoclear_features & ~keep:
            self.header.autoclear_features &= keep
            self._write_header()

    def _check_supported(self, h: hdr.Header) -> None:
        path = self.path
        if h.crypt_method:
            raise UnsupportedImageError(path, f"encryption (method {h.crypt_method})")
        bits = h.incompatible_features
        unknown = bits & ~(hdr.INCOMPAT_DIRTY | hdr.INCOMPAT_CORRUPT | hdr.INCOMPAT_DATA_FILE
                           | hdr.INCOMPAT_COMPRESSION | hdr.INCOMPAT_EXTL2)
        if unknown:
            raise UnsupportedImageError(path, f"unknown incompatible features 0x{unknown:x}")
        if bits & hdr.INCOMPAT_EXTL2:
            raise UnsupportedImageError(path, "extended L2 entries (subclusters)")
        if h.compression_type not in (0, 1):  # QEMU's validate_compression_type
            raise UnsupportedImageError(path, f"compression type {h.compression_type}")
        if h.compression_type == 0 and bits & hdr.INCOMPAT_COMPRESSION:
            raise CorruptImageError(path, "the compression type bit is set for zlib")
        if h.compression_type == 1:
            if not bits & hdr.INCOMPAT_COMPRESSION:
                raise CorruptImageError(path, "the compression type bit is not set for zstd")
            try:
                zstd.library()
            except OSError:
                raise UnsupportedImageError(path, "zstd compression (no libzstd.so.1 on "
                                            "this system)") from None
        if h.version == 2 and h.refcount_order != 4:
            raise CorruptImageError(path, "bad refcount order for a version 2 image")
        # a dirty image opens (repaired read-write: dirty.repair_if_dirty); a corrupt one only
        # read-only, with QEMU's words (rig io prints them after the name)
        if not self.read_only and bits & hdr.INCOMPAT_CORRUPT:
            raise CorruptImageError(path, "the image is marked corrupt", text="qcow2: Image "
                                    "is corrupt; cannot be opened read/write")

    def _open_backing(self, opts: Options, ctx: OpenContext) -> None:
        from rig.core.graph import open_options

        inherited = {**ctx.inherited(), "read-only": True}
        keys = set(opts.keys())
        given = "backing" in keys or any(k.startswith("backing.") for k in keys)
        child_opts: Options
        if given:
            plain = opts.raw("backing") if "backing" in keys else None
            if "backing" in keys and plain is None and not any(
                    k.startswith("backing.") for k in keys):
                return  # backing: null
            if isinstance(plain, str):
                child_opts = Options(flatten(_file_spec(plain, None)), "backing.", inherited)
            else:
                if plain is not None:
                    raise ConfigError("Invalid parameter type for 'backing', expected: string")
                sub = {k[len("backing."):]: opts.raw(k) for k in keys
                       if k.startswith("backing.")}
                if not any(k in ("file", "filename") or k.startswith("file.") for k in sub):
                    # backing.driver=qcow2 or backing.node-name=foo alone: merged with the
                    # header's backing file, as QEMU's bdrv_open_backing_file (114, 133)
                    header = self._header_backing_flat(with_driver="driver" not in sub)
                    if header is not None:
                        sub = {**header, **sub}
                child_opts = Options(sub, "backing.", inherited)
        else:
            flat = self._header_backing_flat(with_driver=True)
            if flat is None:
                return
            child_opts = Options(flat, "backing.", inherited)
        depth = getattr(_depth, "value", 0)
        if depth >= MAX_CHAIN:
            raise CorruptImageError(self.path, f"backing chain deeper than {MAX_CHAIN} "
                                    "(a loop?)")
        _depth.value = depth + 1
        try:
            node = open_options(child_opts)
        except RigError as e:
            if not str(e).startswith("Could not open backing file"):
                e.args = (f"Could not open backing file: {e}",)
            raise
        finally:
            _depth.value = depth
        self.attach_child("backing", node)
        self._backing_len = node.getlength()

    def _header_backing_flat(self, *, with_driver: bool) -> dict[str, Any] | None:
        """The backing node's flat options from the header (file name, backing format or
        probed), None without a backing file; without ``driver`` unless ``with_driver``."""
        from rig.core.graph import spec_to_flat

        assert self.header is not None
        # C strings in QEMU: a name or format ends at its first NUL
        name = (self.header.backing_file or "").split("\0")[0]
        fmt = (self.header.backing_format or "").split("\0")[0] or None
        if not name:
            return None
        if name.startswith("json:") or ":" in name.split("/")[0]:
            flat: dict[str, Any] = dict(spec_to_flat(name))
            if "driver" not in flat:
                flat = {"driver": fmt or "raw", **{f"file.{k}": v for k, v in flat.items()}}
            if not with_driver:
                flat.pop("driver", None)
            return flat
        if not os.path.isabs(name):
            name = os.path.join(os.path.dirname(self.path), name)
        if not with_driver:
            return {"file.driver": "file", "file.filename": name}
        if fmt is not None:  # QEMU names a format it does not know before the file
            try:
                driver_class(fmt)
            except ConfigError as e:
                raise ConfigError(f"Could not open backing file: {e}") from None
        return dict(flatten(_file_spec(name, fmt)))

    def is_inserted(self) -> bool:
        """False once a fatal corruption event has made the node unusable (QEMU's node
        without a driver)."""
        return not self.corruption.dead and super().is_inserted()

    def refresh_limits(self) -> None:
        f = self.children.get("file")
        if f is None:
            return
        align = f.limits.request_alignment
        balign = f.limits.buffer_alignment
        for role in ("backing", datafile.ROLE):
            b = self.children.get(role)
            if b is not None:
                align = max(align, b.limits.request_alignment)
                balign = max(balign, b.limits.buffer_alignment)
        self.limits = BlockLimits(request_alignment=align, buffer_alignment=balign,
                                  discard_granularity=self.cluster_size,
                                  opt_transfer=self.cluster_size)
        self.supported_zero_flags = ReqFlags.MAY_UNMAP | ReqFlags.NO_FALLBACK

    # -------------------------------------------------------------- header
    def _write_header(self) -> None:
        assert self.header is not None and self._io is not None
        fixed = hdr.encode_fixed(self.header)[:hdr.V3_LENGTH]  # unknown fields past it stay
        self._head[:len(fixed)] = fixed
        self._io.write_slice(0, self._head, 0, len(fixed), ignore=overlap.ALL_KINDS)

    def _set_reftable(self, offset: int, clusters: int) -> None:
        h = self.header
        assert h is not None
        old = h.refcount_table_offset, h.refcount_table_clusters
        h.refcount_table_offset, h.refcount_table_clusters = offset, clusters
        try:
            self._write_header()
        except BaseException:
            h.refcount_table_offset, h.refcount_table_clusters = old
            raise

    def _use_reftable(self, offset: int, clusters: int) -> None:
        """Switch to a new refcount structure the header already names (a repair's
        rebuild): the old table and blocks are no longer metadata to the overlap checks."""
        io, old = self._io, self.refs
        assert io is not None and self.header is not None
        cs = self.cluster_size
        io.release(old.table_offset, old.table_clusters * cs, overlap.Ol.REFCOUNT_TABLE)
        for i in range(old.entries):
            block = old._table_entry(i)
            if block:
                io.release(block, cs, overlap.Ol.REFCOUNT_BLOCK)
        self._refs = Refcounts(io, self.header.refcount_order, offset, clusters,
                               self._set_reftable)

    # ------------------------------------------------------------- helpers
    @property
    def tables(self) -> Tables:
        assert self._tables is not None
        return self._tables

    @property
    def refs(self) -> Refcounts:
        assert self._refs is not None
        return self._refs

    def _fail(self, e: CorruptImageError) -> OSError:
        return self.corruption.fail(e, writable=not self.read_only, mark=self._mark_corrupt)

    def _writable(self) -> None:
        self.corruption.check_writable()

    def _mark_corrupt(self) -> None:
        """QEMU's qcow2_mark_corrupt: the header's corrupt bit (v3; a v2 header has no place
        for it), written and flushed; errors are ignored (the node is unusable anyway)."""
        assert self.header is not None
        if self.header.version < 3:
            return
        self.header.incompatible_features |= hdr.INCOMPAT_CORRUPT
        with contextlib.suppress(OSError, RigError):
            self._write_header()
            self.file.flush()

    def _entry(self, gc: int) -> tuple[int, Kind]:
        entry = self.tables.l2_entry(gc)
        return entry, classify(entry, self.tables.version)

    def _host(self, entry: int, gc: int) -> int:
        """The host offset of a normal cluster, checked."""
        host = entry & OFFSET_MASK
        io = self._io
        assert io is not None
        if host % self.cluster_size:
            raise io.corrupt(f"guest cluster {gc} maps to unaligned host offset 0x{host:x}")
        if self.has_data_file:  # an offset in the data file: no metadata there
            return host
        if host + self.cluster_size > io.file_end:
            io.file_end = self.file.getlength()
            if host >= io.file_end:
                raise io.corrupt(f"guest cluster {gc} maps past the end of the file "
                                 f"(0x{host:x})")
        what = io.what(host >> self.cluster_bits)
        if what is not None:
            raise io.corrupt(f"guest cluster {gc} maps onto the {what} (0x{host:x})")
        return host

    def _run(self, gc: int, limit: int, entry: int, kind: Kind, entries: list[int]) -> int:
        """How many clusters from ``gc`` (at most ``limit``) share ``kind`` (and, for normal
        clusters, continue contiguously on the host). ``entries``: the unchecked L2 entries
        from ``gc`` (:meth:`Tables.l2_raw_run`, up to ``limit`` or the table's end); the ones
        looked at are checked, as a walk of checked entries would."""
        if kind is Kind.COMPRESSED:
            return 1
        n = 1
        cs, version = self.cluster_size, self.tables.version
        m = min(limit, len(entries))
        if m > 1:
            self.tables.check_l2(gc, entries, 1, m)
            # the usual run: every entry what the first one predicts (one C comparison)
            if entries[1:m] == (list(range(entry + cs, entry + m * cs, cs))
                                if kind is Kind.NORMAL else [entry] * (m - 1)):
                n = m
            else:
                for e2 in entries[1:m]:
                    if not _continues(e2, n, entry, kind, version, cs):
                        return n
                    n += 1
            if n < len(entries):
                return n  # the run ended inside the first table, at ``limit``
        while n < limit:
            for e2 in self.tables.l2_entry_run(gc + n, limit - n):
                if not _continues(e2, n, entry, kind, version, cs):
                    return n
                n += 1
        return n

    def _child_read(self, node: Node, offset: int, length: int, parts: Iov) -> None:
        a = node.limits.request_alignment
        ba = node.limits.buffer_alignment
        if (offset | length) % a == 0 and (ba == 1 or all(_aligned(p, ba) for p in parts)):
            node.preadv(offset, length, parts)
            return
        start = offset - offset % a
        end = -(-(offset + length) // a) * a
        buf = aligned_buffer(end - start)
        node.preadv(start, end - start, [buf])
        iov_copy_in(parts, buf[offset - start:offset - start + length])

    def _read_backing(self, offset: int, length: int, parts: Iov) -> None:
        b = self.backing
        m = max(0, min(length, self._backing_len - offset)) if b is not None else 0
        if m and b is not None:
            self.emit_below("read_backing_aio")
            self._child_read(b, offset, m, iov_slice(parts, 0, m))
        if m < length:
            _zero(iov_slice(parts, m, length - m))

    def _decompressed(self, entry: int, gc: int) -> bytes:
        key = entry
        if self._zbuf[0] == key and self._zbuf[1]:
            return self._zbuf[1]
        io = self._io
        assert io is not None
        off, n = compressed_extent(entry, self.cluster_bits)
        if off + 1 > io.file_end:
            io.file_end = self.file.getlength()
            if off + 1 > io.file_end:
                raise io.corrupt(f"compressed cluster {gc} at 0x{off:x} is past the end of "
                                 "the file")
        self.emit_below("read_compressed")
        codec = zstd.decompress if self.header and self.header.compression_type else decompress
        data = codec(bytes(io.read(off, n)), self.cluster_size)
        if data is None:
            raise io.corrupt(f"compressed cluster {gc} at 0x{off:x} does not decompress")
        self._zbuf = (key, data)
        return data

    def _read_cluster(self, gc: int, entry: int, kind: Kind, buf: memoryview) -> None:
        """The whole current content of guest cluster ``gc`` into ``buf``."""
        cs = self.cluster_size
        if kind is Kind.UNALLOCATED:
            self._read_backing(gc * cs, cs, [buf])
        elif kind is Kind.NORMAL:
            self.emit_below("read_aio")
            self.data.preadv(self._host(entry, gc), cs, [buf])
        elif kind is Kind.COMPRESSED:
            buf[:] = self._decompressed(entry, gc)
        else:
            buf[:] = bytes(cs)

    def _reads_zero(self, gc: int, kind: Kind) -> bool:
        if kind in _ZEROS:
            return True
        return kind is Kind.UNALLOCATED and (self.backing is None
                                             or gc * self.cluster_size >= self._backing_len)

    # ---------------------------------------------------------------- read
    def _preadv(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        try:
            with self._lock:
                self.corruption.check_usable()
                self._read(offset, length, iov)
        except CorruptImageError as e:
            raise self._fail(e) from None

    def _read(self, offset: int, length: int, iov: Iov) -> None:
        cs = self.cluster_size
        for r in self._cluster_runs(offset, length):
            parts = iov_slice(iov, r.pos, r.n)
            if r.kind is Kind.UNALLOCATED:
                self._read_backing(offset + r.pos, r.n, parts)
            elif r.kind is Kind.NORMAL:
                host = self._host(r.entry, r.gc)
                if r.clusters > 1:
                    self._host(r.entry + (r.clusters - 1) * cs, r.gc + r.clusters - 1)
                self.emit_below("read_aio")
                self.data.preadv(host + r.inner, r.n, parts)
            elif r.kind is Kind.COMPRESSED:
                data = self._decompressed(r.entry, r.gc)
                iov_copy_in(parts, memoryview(data)[r.inner:r.inner + r.n])
            else:
                _zero(parts)

    def _cluster_runs(self, offset: int, length: int, *, write: bool = False
                      ) -> Iterator[_Run]:
        """``[offset, offset+length)`` as runs of clusters that one step can serve: one kind
        (zero kinds together), and for normal clusters contiguous on the host with the same
        COPIED flag. For a write, a stale COPIED flag (refcount 1) is repaired first, and
        clusters that need allocating come as a partial cluster on its own or as whole
        clusters together."""
        cs, cb = self.cluster_size, self.cluster_bits
        t = self.tables
        version = t.version
        pos = 0
        while pos < length:
            off = offset + pos
            gc, inner = off >> cb, off & (cs - 1)
            left = length - pos
            limit = -(-(inner + left) // cs)
            entries = t.l2_raw_run(gc, limit)  # one table lookup for the whole run
            t.check_l2(gc, entries, 0, 1)
            entry = entries[0]
            kind = classify(entry, version)
            if write:
                entry = self._fresh_copied(gc, entry, kind)
                if not (kind is Kind.NORMAL and entry & COPIED):
                    limit = 1 if inner or left < cs else left // cs
            run = self._run(gc, limit, entry, kind, entries)
            n = min(run * cs - inner, left)
            yield _Run(pos, gc, inner, entry, kind, run, n)
            pos += n

    def _fresh_copied(self, gc: int, entry: int, kind: Kind) -> int:
        """A normal cluster without COPIED but with refcount 1 is not shared: set the flag."""
        cb = self.cluster_bits
        if kind is Kind.NORMAL and not entry & COPIED and (self.has_data_file or self.refs.get(
                (entry & OFFSET_MASK) >> cb) == 1):
            entry |= COPIED
            l2_off, i2 = self._l2_for_write(gc)
            self.tables.set_l2_entry(l2_off, i2, entry)
        return entry

    # --------------------------------------------------------------- write
    def _pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        try:
            with self._lock:
                self._writable()
                self._write(offset, length, iov)
                self._maybe_flush_metadata()
        except CorruptImageError as e:
            raise self._fail(e) from None

    def _write(self, offset: int, length: int, iov: Iov) -> None:
        cs = self.cluster_size
        # in-place writes that continue on the host where the last one ended are one request
        # to QEMU (data and preallocated zero clusters together): one write_aio event
        self._next_host = -1
        for r in self._cluster_runs(offset, length, write=True):
            if r.kind is Kind.NORMAL and r.entry & COPIED:
                host = self._host(r.entry, r.gc)
                if r.clusters > 1:
                    self._host(r.entry + (r.clusters - 1) * cs, r.gc + r.clusters - 1)
                self._check_data_write(host + r.inner, r.n)
                if host + r.inner != self._next_host:
                    self.emit_below("write_aio")
                self.data.pwritev(host + r.inner, r.n, iov_slice(iov, r.pos, r.n))
                self._next_host = host + r.inner + r.n
            elif r.kind is Kind.ZERO_ALLOC or (r.kind is Kind.ZERO_PLAIN and r.clusters > 1):
                self._write_zero_run(offset, r, iov)
            elif r.inner == 0 and r.n >= cs:
                done = 0
                while done < r.n:
                    done += self._write_alloc_full(r.gc + done // cs, (r.n - done) // cs,
                                                   iov_slice(iov, r.pos + done, r.n - done))
            else:
                self._write_alloc(r.gc, r.inner, r.n, iov_slice(iov, r.pos, r.n), r.entry,
                                  r.kind)

    def _write_zero_run(self, offset: int, r: _Run, iov: Iov) -> None:
        """A run of zero clusters, cluster by cluster: a preallocated one with COPIED takes the
        data in place (QEMU's handle_copied keeps it; the rest of it is zeroed), the others get
        new clusters."""
        cs, version = self.cluster_size, self.tables.version
        if r.kind is Kind.ZERO_PLAIN and r.inner == 0 and r.n >= cs and not any(
                e & COPIED and classify(e, version) is Kind.ZERO_ALLOC
                for e in (self.tables.l2_entry(r.gc + k) for k in range(r.clusters))):
            done = 0  # nothing to keep: one contiguous allocation, as before
            while done < r.n:
                done += self._write_alloc_full(r.gc + done // cs, (r.n - done) // cs,
                                               iov_slice(iov, r.pos + done, r.n - done))
            return
        pieces = []
        for k in range(r.clusters):
            gc = r.gc + k
            lo = max(r.pos, gc * cs - offset)
            hi = min(r.pos + r.n, gc * cs + cs - offset)
            if hi > lo:
                entry = self.tables.l2_entry(gc)
                pieces.append((gc, offset + lo - gc * cs, hi - lo, iov_slice(iov, lo, hi - lo),
                               entry, classify(entry, version)))
        i = 0
        while i < len(pieces):
            gc, inner, n, parts, entry, kind = pieces[i]
            if not (kind is Kind.ZERO_ALLOC and entry & COPIED):
                self._write_alloc(gc, inner, n, parts, entry, kind)
                i += 1
                continue
            # kept clusters contiguous on the host go out in one write, as QEMU's one request
            j = i + 1
            while j < len(pieces) and pieces[j][5] is Kind.ZERO_ALLOC and pieces[j][4] & COPIED \
                    and pieces[j][4] & OFFSET_MASK == (entry & OFFSET_MASK) + (j - i) * cs:
                j += 1
            host = self._host(entry, gc)
            if j - i > 1:
                self._host(pieces[j - 1][4], pieces[j - 1][0])
            buf = aligned_buffer((j - i) * cs)
            for g2, inner2, n2, parts2, _, _ in pieces[i:j]:
                at = (g2 - gc) * cs + inner2
                iov_copy_out(parts2, buf[at:at + n2])
            if any(p[2] < cs for p in pieces[i:j]):
                self.emit_below("cluster_alloc_space")
            if host != self._next_host:
                self.emit_below("write_aio")
            self._io_write(host, buf)
            self._next_host = host + buf.nbytes
            dirty.mark_dirty(self)
            for g2, _, _, _, e2, _ in pieces[i:j]:
                l2_off, i2 = self._l2_for_write(g2)
                self.tables.set_l2_entry(l2_off, i2, (e2 & OFFSET_MASK) | COPIED)
            i = j

    def _write_alloc_full(self, gc: int, count: int, parts: Iov) -> int:
        """Whole clusters from ``gc`` (up to ``count``, within one L2 table) that all need a new
        host cluster: allocated as one contiguous run where possible, the data written straight
        from the request, the L2 entries written at once. Bytes written."""
        cs = self.cluster_size
        t = self.tables
        version = t.version
        self._next_host = -1
        limit = min(count, t.l2_entries - gc % t.l2_entries)
        # the run's entries (already checked by the walk that found the run), cut before a
        # cluster that can be written in place
        olds = t.l2_entry_run(gc, limit)
        if reduce(or_, olds, 0) & COPIED:
            for j in range(1, len(olds)):
                if olds[j] & COPIED and classify(olds[j], version) is Kind.NORMAL:
                    del olds[j:]
                    break
        l2_off, i2 = self._l2_for_write(gc)
        if self.has_data_file:  # at the guest offset, no refcounts (datafile)
            host, n = gc * cs, len(olds)
        else:
            host, n = self.refs.alloc_run(len(olds))
        try:
            self._check_data_write(host, n * cs)
            self.emit_below("write_aio")
            self.data.pwritev(host, n * cs, iov_slice(parts, 0, n * cs))
            io = self._io
            assert io is not None
            if not self.has_data_file:
                io.file_end = max(io.file_end, host + n * cs)
            first = host | COPIED
            dirty.mark_dirty(self)
            t.set_l2_entries(l2_off, i2, list(range(first, first + n * cs, cs)))
        except OSError:
            for j in range(n):
                self._unalloc_data(host + j * cs)
            raise
        for entry in olds[:n]:
            if entry & (OFFSET_MASK | COMPRESSED):  # unallocated and plain zero hold nothing
                self._free(entry, classify(entry, version))
        return n * cs

    def _write_alloc(self, gc: int, inner: int, n: int, parts: Iov | None, entry: int,
                     kind: Kind) -> None:
        """Give guest cluster ``gc`` a new host cluster holding its old content with
        ``[inner, inner+n)`` replaced by ``parts`` (zeroes when None)."""
        cs = self.cluster_size
        self._next_host = -1
        l2_off, i2 = self._l2_for_write(gc)
        buf = aligned_buffer(cs)
        host = gc * cs if self.has_data_file else self.refs.alloc()
        try:
            # QEMU's events: a partial cluster over zeroes is zeroed first (cluster_alloc_space)
            # and the data written (write_aio); over data, the old content is read (cow_read)
            # and written back with the new data merged in: perform_cow's write_aio (for the
            # guest data merged in; a break there suspends the write, iotest 046), then
            # cow_write, one write
            events = ["write_aio"]
            if n < cs:
                if self._reads_zero(gc, kind):
                    self.emit_below("cluster_alloc_space")
                else:
                    self.emit_below("cow_read")
                    self._read_cluster(gc, entry, kind, buf)
                    events = ["cow_write"] if parts is None else ["write_aio", "cow_write"]
            if parts is None:
                buf[inner:inner + n] = bytes(n)
            else:
                iov_copy_out(parts, buf[inner:inner + n])
            for event in events:
                self.emit_below(event)
            self._io_write(host, buf)
            dirty.mark_dirty(self)
            self.tables.set_l2_entry(l2_off, i2, host | COPIED)
        except BaseException:
            self._unalloc_data(host)
            raise
        self._free(entry, kind)

    def _unalloc(self, host: int) -> None:
        """Give back a cluster allocated for a write that failed (QEMU's alloc abort), so a
        failed write leaks nothing; if that fails too, the cluster is leaked (harmless)."""
        with contextlib.suppress(OSError, CorruptImageError):
            self.refs.free_now(host >> self.cluster_bits)

    def _unalloc_data(self, host: int) -> None:
        """A data cluster given back (nothing to give back in a data file)."""
        if not self.has_data_file:
            self._unalloc(host)

    def _check_data_write(self, host: int, length: int) -> None:
        """The overlap check of a data write (none in a data file, as QEMU)."""
        if self.has_data_file:
            return
        io = self._io
        assert io is not None
        io.check_write(host, length)

    def _io_write(self, host: int, buf: memoryview) -> None:
        """A whole data cluster's write."""
        io = self._io
        assert io is not None
        self._check_data_write(host, buf.nbytes)
        self.data.pwritev(host, buf.nbytes, [buf])
        if not self.has_data_file:
            io.file_end = max(io.file_end, host + buf.nbytes)

    def _l2_for_write(self, gc: int) -> tuple[int, int]:
        """The (writable) L2 table of ``gc``, allocated if needed; (its offset, index)."""
        t, io = self.tables, self._io
        assert io is not None
        i1, i2 = t.split(gc)
        if i1 >= t.l1_size:
            self._grow_l1(i1 + 1)
        l1e = t.l1_entry(i1)
        off = l1e & OFFSET_MASK
        if off and l1e & COPIED:
            return off, i2
        if off and self.refs.get(off >> self.cluster_bits) == 1:
            t.set_l1_entry(i1, off | COPIED)
            return off, i2
        # no table, or one a snapshot shares: the active image gets its own
        new = self._l2_allocate(i1, l1e)
        if off:  # QEMU frees the shared table's reference right after (qcow2_free_clusters)
            io.release(off, self.cluster_size, overlap.Ol.ACTIVE_L2)
            self.refs.defer_free(off >> self.cluster_bits)
        return new, i2

    def _l2_allocate(self, i1: int, old: int) -> int:
        """QEMU's l2_allocate: a new L2 table for L1 entry ``i1`` (empty, or a copy of the
        shared table ``old`` points at), made durable at once, in order: the refcount blocks,
        the table, the L1 entry, each flushed. On failure nothing points at it and its cluster
        is given back."""
        t, io = self.tables, self._io
        assert io is not None
        new = self.refs.alloc()
        if new == 0:  # the refcounts call the header free: QEMU refuses before writing
            self._unalloc(new)
            raise io.event("Preventing invalid allocation of L2 table at offset 0")
        if old & OFFSET_MASK:
            self.emit_below("l2_alloc_cow_read")
            table = bytearray(t.l2_table(old & OFFSET_MASK))
        else:
            table = bytearray(self.cluster_size)
        io.claim(new, self.cluster_size, overlap.Ol.ACTIVE_L2)
        t.put_l2(new, table)
        was_dirty = i1 in t.l1_dirty
        t.set_l1_entry(i1, new | COPIED)
        written = False
        try:
            self._write_tables(l2_alloc=True)
            written = True
            self.file.flush()  # QEMU's bdrv_pwrite_sync of the L1 entry
        except BaseException:
            t.set_l1_entry(i1, old)
            if not written and not was_dirty:  # the disk still has ``old``
                t.l1_dirty.discard(i1)
            t.drop_l2(new)
            io.release(new, self.cluster_size, overlap.Ol.ACTIVE_L2)
            self._unalloc(new)
            raise
        return new

    def _grow_l1(self, min_size: int, *, exact: bool = False) -> None:
        """QEMU's qcow2_grow_l1_table: a larger L1 table (``exact``ly ``min_size`` entries, or
        1.5 times at a time) in new clusters, written and flushed, then the header switched to
        it (flushed); the old table's clusters are freed after the next flush. Needed by the
        vmstate area (past the guest's size) and by truncate."""
        t, io, h = self.tables, self._io, self.header
        assert io is not None and h is not None
        cs = self.cluster_size
        size = max(t.l1_size, 1)
        while size < min_size:
            size = min_size if exact else -(-size * 3 // 2)
        if size * 8 > MAX_L1_BYTES:
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
        self._write_tables()  # the entries the new table copies point at durable tables
        clusters = -(-size * 8 // cs)
        self.emit_below("l1_grow_alloc_table")
        off = self.refs.alloc_clusters(clusters)
        table = bytearray(clusters * cs)
        table[:t.l1_size * 8] = t.l1[:t.l1_size * 8]
        old = h.l1_size, h.l1_table_offset
        try:
            self.refs.write_dirty()
            self.file.flush()
            io.check_write(off, size * 8)
            self.emit_below("l1_grow_write_table")
            io.write(off, table)
            self.file.flush()
            self.emit_below("l1_grow_activate_table")
            h.l1_size, h.l1_table_offset = size, off
            self._write_header()
        except BaseException:
            h.l1_size, h.l1_table_offset = old
            for j in range(clusters):
                self._unalloc(off + j * cs)
            raise
        old_off, old_clusters = t.l1_offset, -(-t.l1_size * 8 // cs)
        t.replace_l1(off, size, table)
        for j in range(old_clusters if old[0] else 0):
            self.refs.defer_free((old_off >> self.cluster_bits) + j)
        self.file.flush()  # QEMU's bdrv_pwrite_sync of the header

    # ------------------------------------------------------------- vmstate
    def vmstate_offset(self) -> int:
        """Where the VM state lives in the guest address space (QEMU's qcow2_vm_state_offset):
        the first L1 entry past the disk's size."""
        assert self.header is not None
        span = self.cluster_size * (self.cluster_size // 8)
        return -(-self.header.size // span) * span

    def save_vmstate(self, pos: int, iov: Iov) -> None:
        """QEMU's bdrv_save_vmstate on qcow2 (``write -b``): a write at ``pos`` in the VM
        state area."""
        length = sum(memoryview(p).nbytes for p in iov)
        try:
            with self._lock:
                self._writable()
                self.emit_below("vmstate_save")
                self._write(self.vmstate_offset() + pos, length, iov)
                self._maybe_flush_metadata()
        except CorruptImageError as e:
            raise self._fail(e) from None
        self.write_gen += 1

    def write_compressed(self, offset: int, iov: Iov) -> None:
        """QEMU's compressed write (``write -c``): whole clusters, each stored compressed
        (see :mod:`compress`)."""
        length = sum(memoryview(p).nbytes for p in iov)
        if self.has_data_file:  # QEMU: no compressed clusters in a data file
            raise OSError(errno.ENOTSUP, os.strerror(errno.ENOTSUP))
        try:
            with self._lock:
                self._writable()
                compress.write_compressed(self, offset, length, iov)
                self._maybe_flush_metadata()
        except CorruptImageError as e:
            raise self._fail(e) from None
        finally:
            self.write_gen += 1

    def load_vmstate(self, pos: int, iov: Iov) -> None:
        """QEMU's bdrv_load_vmstate on qcow2 (``read -b``)."""
        length = sum(memoryview(p).nbytes for p in iov)
        try:
            with self._lock:
                self.corruption.check_usable()
                self.emit_below("vmstate_load")
                self._read(self.vmstate_offset() + pos, length, iov)
        except CorruptImageError as e:
            raise self._fail(e) from None

    def _free(self, entry: int, kind: Kind, *, discard: bool = False) -> None:
        """Drop the references an L2 entry held (after the entry was replaced): queued until
        the next metadata flush has made the new entry durable."""
        cb = self.cluster_bits
        clusters: list[int] = []
        if self.has_data_file:  # no refcounts: a discard reaches the data file (QEMU's
            # qcow2_free_any_cluster with discard passthrough for requests)
            if discard and kind in (Kind.NORMAL, Kind.ZERO_ALLOC):
                self._discard_data(entry & OFFSET_MASK)
            return
        if kind in (Kind.NORMAL, Kind.ZERO_ALLOC):
            clusters.append((entry & OFFSET_MASK) >> cb)
        elif kind is Kind.COMPRESSED:
            first, last = compressed_span(entry, cb)
            clusters.extend(range(first, last + 1))
        for c in clusters:
            self.refs.defer_free(c)
            if discard:
                self._discard_after.add(c)

    # --------------------------------------------------------------- flush
    def _flush_metadata(self) -> None:
        """Write the cached metadata in an order that keeps the image consistent whatever a
        crash keeps (QEMU's cache dependencies): refcount blocks (the new clusters' increments)
        and, already issued, the data; flush; dirty L2 tables; flush; the L1 table; then, with
        the old references durably gone, the deferred decrements (flush first) and their
        refcount blocks. The caller's generic flush then flushes the file."""
        t, r = self._tables, self._refs
        if t is None or r is None:
            return
        self._write_tables()
        self._write_frees()

    def _write_tables(self, *, l2_alloc: bool = False, tables_only: bool = False) -> None:
        """Steps 1-3 of the metadata flush: refcount increments, flush, L2 tables, flush, L1
        (``l2_alloc``: the new L2 table QEMU's l2_allocate writes, with its event;
        ``tables_only``: nothing when no table is dirty, as QEMU's L2 cache flush writes the
        refcount blocks only as a dependency of a dirty table)."""
        t, r = self.tables, self.refs
        if not (r.dirty or t.dirty_l2 or t.l1_dirty):
            return
        if tables_only and not (t.dirty_l2 or t.l1_dirty):
            return
        if l2_alloc or not dirty.is_dirty(self):  # QEMU's l2_allocate flushes them anyway
            r.write_dirty()
        if t.dirty_l2 or t.l1_dirty:
            self.file.flush()
            if l2_alloc:
                self.emit_below("l2_alloc_write")
            t.write_l2s()
        if t.l1_dirty:
            self.file.flush()
            t.write_l1()

    def _write_frees(self) -> None:
        """Step 4: the deferred decrements, once the tables without the references are
        durable, and their refcount blocks."""
        r = self.refs
        if r.deferred:
            self.file.flush()
            freed = r.apply_deferred()
            if not dirty.is_dirty(self):
                r.write_dirty()
            for c in freed:
                if c in self._discard_after:
                    self._discard_host(c << self.cluster_bits, self.cluster_size)
            self._discard_after.clear()

    def _flush_to_os(self) -> None:
        try:
            with self._lock:
                if self.corruption.dead:
                    return  # QEMU flushes a node without a driver as a no-op
                self._flush_metadata()
        except CorruptImageError as e:
            raise self._fail(e) from None

    def _maybe_flush_metadata(self) -> None:
        """Dirty tables are not evicted: write them out when they fill the cache."""
        if self.tables.dirty_bytes > L2_CACHE_BYTES:
            self._flush_metadata()

    def _close(self) -> None:
        if self.read_only or self._tables is None or self.corruption.dead:
            return
        # closing is not a power cut: write everything (errors leave at worst leaks). As
        # QEMU's bdrv_close: a flush whose errors are ignored, then qcow2_inactivate, which
        # flushes the L2 table cache and the refcount block cache and reports each failure.
        with self._lock:
            with contextlib.suppress(OSError, RigError):
                self.flush()
            tables = self._flush_reporting("L2 table",
                                           lambda: self._write_tables(tables_only=True))
            refcounts = self._flush_reporting("refcount block", self._write_refcounts)
            if tables and refcounts:
                dirty.mark_clean(self)

    def _write_refcounts(self) -> None:
        self._write_frees()
        self.refs.write_dirty()

    def _flush_reporting(self, cache: str, write: Callable[[], None]) -> bool:
        """QEMU's qcow2_cache_flush at close: write, then flush the file; a failure is one
        line on stderr (``Failed to flush the L2 table cache: Input/output error``). True
        when it worked."""
        try:
            write()
            self.file.flush()
        except OSError as e:
            error_report(f"Failed to flush the {cache} cache: "
                         f"{os.strerror(e.errno or errno.EIO)}")
            return False
        except RigError:
            return False
        return True

    def _discard_host(self, host: int, length: int) -> None:
        try:
            self.file.discard(host, length)
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL):
                raise

    def _discard_data(self, host: int) -> None:
        """A data cluster in the data file no longer used: discarded there."""
        try:
            self.data.discard(host, self.cluster_size)
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL):
                raise

    # ------------------------------------------------------ zeroes, discard
    def _whole(self, offset: int, length: int) -> tuple[int, int]:
        """The guest clusters ``[first, end)`` wholly inside the range (the image's last,
        partial cluster counts as whole when the range reaches the end)."""
        cs = self.cluster_size
        end = offset + length
        assert self.header is not None
        if end >= self.header.size:
            end = -(-end // cs) * cs
        return -(-offset // cs), end // cs

    def _write_zeroes(self, offset: int, length: int, flags: ReqFlags) -> None:
        try:
            with self._lock:
                self._writable()
                self._zeroes(offset, length, flags)
                self._maybe_flush_metadata()
        except CorruptImageError as e:
            raise self._fail(e) from None

    def _zeroes(self, offset: int, length: int, flags: ReqFlags) -> None:
        """QEMU's qcow2_co_pwrite_zeroes: every cluster the request touches becomes a zero
        cluster (v3) where it can; a partial cluster only when the rest of it reads as zeroes
        and it holds no data; otherwise (and always on v2, which has no zero flag) zeroes are
        written, unless ``NO_FALLBACK`` (ENOTSUP)."""
        cs, cb = self.cluster_size, self.cluster_bits
        first, end = self._whole(offset, length)
        unmap = bool(flags & ReqFlags.MAY_UNMAP)
        no_fallback = bool(flags & ReqFlags.NO_FALLBACK)
        if self.tables.version < 3:
            if no_fallback:
                raise OSError(errno.ENOTSUP, "qcow2 v2 has no zero clusters")
            self._write_zero_data(offset, length)
            return
        if datafile.is_raw(self):  # the data file stays a raw image of the disk
            self.data.write_zeroes(offset, length, flags & ReqFlags.MAY_UNMAP)
        pieces = []
        if first > end:  # inside one cluster
            pieces.append((offset, length))
        else:
            if offset < first * cs:
                pieces.append((offset, first * cs - offset))
            if offset + length > end * cs and end >= first:
                pieces.append((end * cs, offset + length - end * cs))
        for off, n in pieces:
            gc = off >> cb
            entry, kind = self._entry(gc)
            if kind in _ZEROS or (kind is Kind.UNALLOCATED and self._rest_reads_zero(off, n)):
                self._zero_cluster(gc, entry, kind, unmap)
                continue
            if no_fallback:
                raise OSError(errno.ENOTSUP, "qcow2: partial-cluster write_zeroes needs a "
                              "fallback write")
            self._write_zero_data(off, n)
        for gc in range(first, end):
            entry, kind = self._entry(gc)
            self._zero_cluster(gc, entry, kind, unmap)

    def _zero_cluster(self, gc: int, entry: int, kind: Kind, unmap: bool) -> None:
        """QEMU's zero_in_l2_slice for one cluster: the zero flag set; the host cluster
        dropped for a compressed cluster or, with ``unmap``, an allocated one; nothing
        written when the entry does not change."""
        drop = kind is Kind.COMPRESSED or (unmap and kind in (Kind.NORMAL, Kind.ZERO_ALLOC))
        new = ZERO if drop or kind is Kind.UNALLOCATED else entry | ZERO
        if new == entry:
            return
        l2_off, i2 = self._l2_for_write(gc)
        self.tables.set_l2_entry(l2_off, i2, new)
        if drop:
            self._free(entry, kind, discard=unmap)

    def _rest_reads_zero(self, offset: int, length: int) -> bool:
        """Whether the parts of ``[offset, offset+length)``'s cluster (unallocated here)
        outside it read as zeroes: no backing data there (QEMU asks block status, which for a
        backing file that has data, or a raw one, does not say zero)."""
        cs = self.cluster_size
        start = offset & ~(cs - 1)
        parts = [(start, offset - start), (offset + length, start + cs - offset - length)]
        b = self.backing
        for off, n in parts:
            if n <= 0 or b is None or off >= self._backing_len:
                continue
            if not isinstance(b, Qcow2Node):  # QEMU: a raw file's status never says zero here
                return False
            st = b.block_status(off, min(n, self._backing_len - off))
            if not st.zero or st.offset + st.length < min(off + n, self._backing_len):
                return False
        return True

    def _write_zero_data(self, offset: int, length: int) -> None:
        """The fallback of a zero write: zeroes written as data, a megabyte at a time."""
        chunk = min(length, 1 << 20)
        buf = aligned_buffer(chunk)  # zeroed, aligned for O_DIRECT
        done = 0
        while done < length:
            n = min(chunk, length - done)
            self._write(offset + done, n, [buf[:n]])
            done += n

    def _discard(self, offset: int, length: int) -> None:
        try:
            with self._lock:
                self._writable()
                self._discard_clusters(offset, length)
                self._maybe_flush_metadata()
        except CorruptImageError as e:
            raise self._fail(e) from None

    def _discard_clusters(self, offset: int, length: int) -> None:
        """QEMU's discard request: whole clusters only; v3 leaves zero clusters (reads zeroes),
        v2 unallocated ones, and nothing over a backing file (it would show), as QEMU.

        The freed host clusters can be allocated again by the next write, as in QEMU (its
        free_cluster_index; iotest 250's layout): the tables without them are made durable at
        the end of the request (the ordered metadata flush), then their refcounts drop."""
        first, end = self._whole(offset, length)
        v3 = self.tables.version >= 3
        if not v3 and self.backing is not None:
            return  # v2 cannot drop a cluster without showing the backing data: QEMU's ENOTSUP
        freed = False
        for gc in range(first, end):
            entry, kind = self._entry(gc)
            if kind is Kind.ZERO_PLAIN or (kind is Kind.UNALLOCATED and (
                    not v3 or self.backing is None)):
                continue
            l2_off, i2 = self._l2_for_write(gc)
            self.tables.set_l2_entry(l2_off, i2, ZERO if v3 else 0)
            self._free(entry, kind, discard=True)
            freed = freed or bool(entry & (OFFSET_MASK | COMPRESSED))
        if freed:
            self._flush_metadata()

    # -------------------------------------------------------- block status
    def _block_status(self, offset: int, length: int) -> BlockStatus:
        try:
            with self._lock:
                self.corruption.check_usable()
                return self._status(offset, length)
        except CorruptImageError as e:
            raise self._fail(e) from None

    def _status(self, offset: int, length: int) -> BlockStatus:
        cs, cb = self.cluster_size, self.cluster_bits
        gc, inner = offset >> cb, offset & (cs - 1)
        t = self.tables
        l2 = t.l2_entries
        limit = min(-(-(inner + length) // cs), l2 - gc % l2)
        entries = t.l2_raw_run(gc, limit)  # one table lookup for the whole run
        t.check_l2(gc, entries, 0, 1)
        entry = entries[0]
        kind = classify(entry, t.version)
        n = self._status_run(gc, limit, entry, kind, entries)
        count = min(n * cs - inner, length)
        if kind is Kind.UNALLOCATED:
            if self.backing is not None and offset < self._backing_len:
                return BlockStatus(offset, min(count, self._backing_len - offset), data=False,
                                   zero=False, allocated=False)
            return BlockStatus(offset, count, data=False, zero=True, allocated=False)
        if kind in _ZEROS:
            return BlockStatus(offset, count, data=False, zero=True, allocated=True)
        return BlockStatus(offset, count, data=True, zero=False, allocated=True)

    def _status_run(self, gc: int, limit: int, entry: int, kind: Kind,
                    entries: list[int]) -> int:
        """QEMU's run for block status (qcow2_get_host_offset): clusters of exactly one kind
        inside one L2 table; data and zero-allocated ones also contiguous on the host; a
        compressed cluster alone. Callers that stop where a run stops (a stream job) then stop
        where QEMU does. ``entries``: the ``limit`` unchecked L2 entries from ``gc`` (limit
        stays in gc's table); checked here when looked at."""
        if kind is Kind.COMPRESSED or limit <= 1:
            return 1
        self.tables.check_l2(gc, entries, 1, limit)
        host = entry & OFFSET_MASK
        contiguous = kind is Kind.NORMAL or kind is Kind.ZERO_ALLOC
        cs, version = self.cluster_size, self.tables.version
        # the usual run: every entry what the first one predicts (one C comparison)
        if entries == (list(range(entry, entry + limit * cs, cs)) if contiguous
                       else [entry] * limit):
            return limit
        n = 1
        for e2 in entries[1:limit]:
            if classify(e2, version) is not kind or (
                    contiguous and e2 & OFFSET_MASK != host + n * cs):
                break
            n += 1
        return n

    # ------------------------------------------------------------- backing
    def change_backing_file(self, name: str | None, fmt: str | None = None) -> None:
        """QEMU's bdrv_change_backing_file: rewrite the header's backing file name and format
        (None: no backing file). Everything written so far is made durable first, so the
        header never names a shorter chain than the data needs. The ``backing`` child is not
        changed: see :meth:`set_backing`."""
        if self.read_only:
            raise OSError(errno.EPERM, "Block node is read-only")
        if fmt is not None and name is None:
            raise ConfigError("a backing format needs a backing file name")
        with self._lock:
            self.corruption.check_usable()
            assert self.header is not None and self._io is not None
            h = self.header
            old_name, old_exts = h.backing_file, list(h.extensions)
            h.backing_file = name
            h.set_backing_format(fmt)
            try:
                head = hdr.encode(h)
            except hdr.HeaderError as e:
                h.backing_file, h.extensions = old_name, old_exts
                hdr.encode(h)
                raise ConfigError(f"qcow2 image '{self.path}': {e}") from None
            try:
                self._flush_metadata()
            except CorruptImageError as e:
                raise self._fail(e) from None
            self.file.flush()
            end = max(len(head), self._head_used)
            self._head[:end] = head + bytes(end - len(head))
            self._head_used = len(head)
            self._io.write_slice(0, self._head, 0, end, ignore=overlap.ALL_KINDS)
            self.file.flush()

    def set_backing(self, node: Node | None) -> None:
        """Replace the ``backing`` child (the caller owns the old one: it is not closed)."""
        with self._lock:
            self.children.pop("backing", None)
            if node is not None:
                self.children["backing"] = node
            self._backing_len = node.getlength() if node is not None else 0
            self.refresh()

    # ---------------------------------------------------------------- misc
    def _getlength(self) -> int:
        assert self.header is not None
        return self.header.size

    def _truncate(self, length: int) -> None:
        try:
            with self._lock:
                self._writable()
                truncate(self, length)
                self._maybe_flush_metadata()
        except CorruptImageError as e:
            raise self._fail(e) from None


_ZEROS = (Kind.ZERO_PLAIN, Kind.ZERO_ALLOC)


class _Run(NamedTuple):
    """A run of guest clusters served by one step (see :meth:`Qcow2Node._cluster_runs`)."""

    pos: int
    """Where the run starts, relative to the request."""
    gc: int
    """Its first guest cluster."""
    inner: int
    """Its offset inside that cluster."""
    entry: int
    """The first cluster's L2 entry."""
    kind: Kind
    clusters: int
    n: int
    """Its length in bytes (within the request)."""


def _aligned(buf: memoryview, alignment: int) -> bool:
    from rig.core.buffers import buffer_address

    addr = buffer_address(buf)
    return addr is not None and addr % alignment == 0


#: QEMU's limits on the snapshot table: 65536 entries of at least 40 bytes.
MAX_SNAPSHOTS = 65536
SNAPSHOT_HEADER = 40


def _check_snapshot_table(path: str, h: hdr.Header) -> None:
    """QEMU checks the snapshot table's place even when it has no entries."""
    if h.nb_snapshots > MAX_SNAPSHOTS:
        raise CorruptImageError(path, f"snapshot table ({h.nb_snapshots} entries) is too large")
    size = h.nb_snapshots * SNAPSHOT_HEADER
    if h.snapshots_offset % (1 << h.cluster_bits) or h.snapshots_offset > INT64_MAX - size:
        raise CorruptImageError(path, f"snapshot table offset 0x{h.snapshots_offset:x} is "
                                "invalid")


def _file_spec(path: str, fmt: str | None) -> dict[str, Any]:
    return {"driver": fmt or probe_format(path), "file": {"driver": "file", "filename": path}}


def _continues(e2: int, n: int, entry: int, kind: Kind, version: int, cs: int) -> bool:
    """Whether L2 entry ``e2``, ``n`` clusters after ``entry`` (of ``kind``), extends its run:
    the same kind (any zero kind for a zero run), and for data the next host cluster with the
    same COPIED bit."""
    k2 = classify(e2, version)
    if k2 is not kind and not (kind in _ZEROS and k2 in _ZEROS):
        return False
    return kind is not Kind.NORMAL or (e2 & OFFSET_MASK == (entry & OFFSET_MASK) + n * cs
                                       and not (e2 ^ entry) & COPIED)
