"""Compressed writes (QEMU 7.2's qcow2_co_pwritev_compressed_part): ``write -c`` in rig io.

A request must start on a cluster boundary and cover whole clusters (the image's last, partial
cluster counts as whole: it is padded with zeroes). Each cluster is compressed as QEMU does
(zlib raw deflate, 4 KiB window, default level, or zstd (:mod:`zstd`) when the image says so;
output at most a cluster less one byte); one
that does not shrink is written as a normal cluster instead. A compressed cluster may not
overwrite anything: an allocated cluster (data, preallocated zeroes, compressed) fails the
request with EIO, as in QEMU.

Compressed data is placed by QEMU's byte allocator (qcow2_alloc_bytes): it continues in the
host cluster the last compressed cluster ended in (each user of a host cluster holds one
reference to it), runs on into the next cluster when that is the next free one, and starts a
fresh cluster otherwise. Events: ``cluster_alloc_bytes``, ``write_compressed``,
``l2_update_compressed``. The new L2 entry is written by the ordered metadata flush, after the
refcounts.
"""

from __future__ import annotations

import errno
import os
import zlib
from typing import TYPE_CHECKING

from rig.core.buffers import aligned_buffer, iov_copy_out, iov_slice
from rig.core.node import Iov
from rig.errors import RigError
from rig.formats.qcow2 import zstd
from rig.formats.qcow2.tables import COMPRESSED, OFFSET_MASK

if TYPE_CHECKING:
    from rig.formats.qcow2.driver import Qcow2Node


def compress(data: bytes | memoryview, limit: int) -> bytes | None:
    """QEMU's qcow2_zlib_compress; None when the result would be longer than ``limit``."""
    c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -12, 9)
    out = c.compress(data) + c.flush()
    return out if len(out) <= limit else None


def write_compressed(node: Qcow2Node, offset: int, length: int, iov: Iov) -> None:
    """The request, cluster by cluster (the caller holds the node's lock)."""
    h = node.header
    assert h is not None
    cs = node.cluster_size
    if offset % cs or (length % cs and offset + length != h.size):
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    done = 0
    while done < length:
        n = min(cs, length - done)
        _cluster(node, offset + done, n, iov_slice(iov, done, n))
        done += n


def _cluster(node: Qcow2Node, offset: int, n: int, parts: Iov) -> None:
    cs, cb = node.cluster_size, node.cluster_bits
    buf = aligned_buffer(cs)  # zeroes past a short last cluster
    iov_copy_out(parts, buf[:n])
    h = node.header
    assert h is not None
    out = (zstd.compress if h.compression_type == 1 else compress)(buf, cs - 1)
    if out is None:  # does not shrink: a normal write
        node._write(offset, n, parts)
        return
    gc = offset >> cb
    if node.tables.l2_entry(gc) & OFFSET_MASK:
        raise OSError(errno.EIO, os.strerror(errno.EIO))  # compression overwrites nothing
    l2_off, i2 = node._l2_for_write(gc)
    host = _alloc_bytes(node, len(out))
    try:
        io = node._io
        assert io is not None
        io.check_write(host, len(out))
        node.emit_below("write_compressed")
        _write_bytes(node, host, out)
    except BaseException:
        _free_bytes(node, host, len(out))
        raise
    sectors = (host + len(out) - 1) // 512 - host // 512
    node.emit_below("l2_update_compressed")
    node.tables.set_l2_entry(l2_off, i2, host | COMPRESSED | sectors << (62 - (cb - 8)))


def _alloc_bytes(node: Qcow2Node, size: int) -> int:
    """QEMU's qcow2_alloc_bytes: ``size`` bytes (at most a cluster) of host space."""
    refs = node.refs
    cs, cb = node.cluster_size, node.cluster_bits
    node.emit_below("cluster_alloc_bytes")
    offset = node.free_byte_offset
    if offset and refs.get(offset >> cb) == refs.max:
        offset = 0
    free = cs - offset % cs
    if not offset or free < size:
        new = refs.find_free() << cb
        if new == 0:
            io = node._io
            assert io is not None
            raise io.event("Preventing invalid allocation of compressed cluster at offset 0")
        if not offset or -(-offset // cs) * cs != new:
            offset = new
    for c in range(offset >> cb, ((offset + size - 1) >> cb) + 1):
        refs.update(c, 1)
    node.free_byte_offset = 0 if (offset + size) % cs == 0 else offset + size
    return offset


def _free_bytes(node: Qcow2Node, offset: int, size: int) -> None:
    """Give back what :func:`_alloc_bytes` took (a failed write); a failure here leaks."""
    cb = node.cluster_bits
    try:
        for c in range(offset >> cb, ((offset + size - 1) >> cb) + 1):
            node.refs.free_now(c)
    except (OSError, RigError):
        pass
    node.free_byte_offset = 0


def _write_bytes(node: Qcow2Node, host: int, data: bytes) -> None:
    """Write ``data`` at a byte offset, read-modify-write to the file's request alignment."""
    f = node.file
    a = f.limits.request_alignment
    io = node._io
    assert io is not None
    start = host - host % a
    end = -(-(host + len(data)) // a) * a
    buf = aligned_buffer(end - start)
    if start != host or end != host + len(data):
        have = min(end, max(io.file_end, f.getlength())) - start
        if have > 0:
            node._child_read(f, start, have, [buf[:have]])
    buf[host - start:host - start + len(data)] = data
    f.pwritev(start, end - start, [buf])
    io.file_end = max(io.file_end, end)
