"""Resizing a qcow2 image (QEMU 7.2's qcow2_co_truncate with preallocation off).

Growing: the L1 table grows to exactly the entries the new size needs (written and flushed
before the header names it), then the header's size is written and flushed. Over a backing file
longer than the old size, the new area is zeroed (zero clusters), so the backing data past the
old end does not show (QEMU's ``BDRV_REQ_ZERO_WRITE``).

Shrinking: the clusters wholly past the new end are dropped (a full discard: unallocated, their
host clusters freed), the metadata is flushed, the L1 entries past the new end are cleared on
disk (``l1_shrink_write_table``) and their L2 tables freed (``l1_shrink_free_l2_clusters``),
then the size is written. As QEMU, the L1 table keeps its size, and a partial last cluster keeps
its data. Not done: cutting the file's tail (QEMU truncates the file to its last used cluster;
the rig leaves the freed clusters in the file, which ``qemu-img check`` does not mind).

Refused, with QEMU's words: a size that is not a multiple of 512, a v2 image with internal
snapshots, and a read-only image. A v3 image with snapshots resizes (they keep their own L1
tables and sizes).
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from rig.core.node import ReqFlags
from rig.formats.qcow2 import overlap
from rig.formats.qcow2.tables import OFFSET_MASK, classify

if TYPE_CHECKING:
    from rig.formats.qcow2.driver import Qcow2Node


def _fail(code: int, message: str) -> OSError:
    return OSError(code, message)


def truncate(node: Qcow2Node, length: int) -> None:
    """Resize ``node`` to ``length`` bytes (the caller holds its lock)."""
    h = node.header
    assert h is not None
    if length % 512:
        raise _fail(errno.EINVAL, "The new size must be a multiple of 512")
    old = h.size
    if length == old:
        return
    if h.nb_snapshots and h.version < 3:  # v2 did not have to store snapshot sizes
        raise _fail(errno.ENOTSUP, "Can't resize a v2 image which has snapshots")
    span = node.cluster_size * (node.cluster_size // 8)
    l1_needed = -(-length // span)
    if length < old:
        _shrink(node, length, l1_needed)
    elif l1_needed > node.tables.l1_size:
        try:
            node._grow_l1(l1_needed, exact=True)
        except OSError as e:
            raise _fail(e.errno or errno.EIO, "Failed to grow the L1 table: "
                        f"{os.strerror(e.errno or errno.EIO)}") from None
    try:
        _set_size(node, length)
    except OSError as e:
        raise _fail(e.errno or errno.EIO, "Failed to update the image size: "
                    f"{os.strerror(e.errno or errno.EIO)}") from None
    if length > old and node.backing is not None and node._backing_len > old:
        node._zeroes(old, length - old, ReqFlags.NONE)


def _set_size(node: Qcow2Node, length: int) -> None:
    """The header's size, written and flushed (QEMU's bdrv_pwrite_sync of the field)."""
    h = node.header
    assert h is not None
    old = h.size
    h.size = length
    try:
        node._write_header()
        node.file.flush()
    except BaseException:
        h.size = old
        raise


def _shrink(node: Qcow2Node, length: int, l1_needed: int) -> None:
    cs, cb = node.cluster_size, node.cluster_bits
    t = node.tables
    h = node.header
    assert h is not None
    first = -(-length // cs)
    end = -(-h.size // cs)
    version = t.version
    try:
        for gc in range(first, end):  # QEMU's full discard of the cropped clusters
            entry = t.l2_entry(gc)
            if not entry:
                continue
            l2_off, i2 = node._l2_for_write(gc)
            t.set_l2_entry(l2_off, i2, 0)
            node._free(entry, classify(entry, version), discard=True)
        node._flush_metadata()
    except OSError as e:
        raise _fail(e.errno or errno.EIO, "Failed to discard cropped clusters: "
                    f"{os.strerror(e.errno or errno.EIO)}") from None
    dropped = [(i, t.l1_entry(i) & OFFSET_MASK) for i in range(l1_needed, t.l1_size)]
    dropped = [(i, off) for i, off in dropped if off]
    if not dropped:
        return
    io = node._io
    assert io is not None
    try:
        node.emit_below("l1_shrink_write_table")
        for i, _ in dropped:
            t.set_l1_entry(i, 0)
        t.write_l1(event=False)
        node.file.flush()
    except OSError as e:
        raise _fail(e.errno or errno.EIO, "Failed to reduce the number of L2 tables: "
                    f"{os.strerror(e.errno or errno.EIO)}") from None
    node.emit_below("l1_shrink_free_l2_clusters")
    for _, off in dropped:
        t.drop_l2(off)
        io.release(off, cs, overlap.Ol.ACTIVE_L2)
        node.refs.defer_free(off >> cb)

