"""Internal snapshots, as far as the rig's node deals with them: it opens an image that has some
and writes to it without disturbing them.

Creating, applying and deleting snapshots is ``qemu-img snapshot``'s job (the iotests use it;
qemu-io has no command for it). What the node needs is the layout, so that its overlap checks
know the snapshot table, each snapshot's L1 table (inactive L1) and the L2 tables those point
at (inactive L2), and so that shared clusters are copied before they are written: a cluster or
L2 table whose refcount is above one belongs to a snapshot too (its COPIED flag is clear), and
the driver's write path gives the active image its own copy (QEMU's copy on write: the data
cluster, or the L2 table with ``l2_alloc_cow_read``), dropping one reference to the shared one.

The snapshot table entries (QEMU's QCowSnapshotHeader, big-endian): u64 L1 table offset, u32
L1 size, u16 id length, u16 name length, u32 date seconds, u32 date nanoseconds, u64 VM clock,
u32 VM state size, u32 extra data size, then the extra data, the id and the name, padded to 8
bytes.
"""

from __future__ import annotations

import errno
import struct
from typing import NamedTuple

from rig.formats.qcow2.metaio import INT64_MAX, MetaIO
from rig.formats.qcow2.overlap import Ol
from rig.formats.qcow2.tables import L1_RESERVED, OFFSET_MASK

_ENTRY = struct.Struct(">QIHHIIQII")
#: QEMU's limits (QCOW_MAX_SNAPSHOT_EXTRA_DATA, QCOW_MAX_L1_SIZE).
MAX_EXTRA = 1024
MAX_L1_BYTES = 32 << 20


class Snapshot(NamedTuple):
    l1_offset: int
    l1_size: int
    name: str


def read_table(io: MetaIO, offset: int, count: int) -> tuple[list[Snapshot], int]:
    """The snapshots and the table's length in bytes; the table, the snapshots' L1 tables and
    the L2 tables they name are claimed for the overlap checks."""
    snaps: list[Snapshot] = []
    pos = offset
    for i in range(count):
        head = io.read(pos, _ENTRY.size)
        l1_off, l1_size, id_len, name_len, _, _, _, _, extra = _ENTRY.unpack(bytes(head))
        if extra > MAX_EXTRA:
            raise io.corrupt(f"snapshot {i} has too much extra data ({extra} bytes)")
        body = io.read(pos + _ENTRY.size + extra, id_len + name_len)
        name = bytes(body[id_len:]).decode("utf-8", "replace")
        size = _ENTRY.size + extra + id_len + name_len
        pos += -(-size // 8) * 8
        if pos > INT64_MAX:
            raise io.corrupt("snapshot table is too large")
        snaps.append(Snapshot(l1_off, l1_size, name))
    length = pos - offset
    if count:
        io.claim(offset, length, Ol.SNAPSHOT_TABLE)
    cs = io.cluster_size
    for s in snaps:
        if s.l1_size * 8 > MAX_L1_BYTES:  # QEMU's qcow2_validate_table, as the overlap check
            io.inactive_l2_errno = io.inactive_l2_errno or errno.EFBIG
            continue
        if s.l1_offset % cs or s.l1_offset > INT64_MAX - s.l1_size * 8:
            io.inactive_l2_errno = io.inactive_l2_errno or errno.EINVAL
            continue
        if not s.l1_size:
            continue
        io.claim(s.l1_offset, s.l1_size * 8, Ol.INACTIVE_L1)
        raw = io.read(s.l1_offset, s.l1_size * 8)
        for (entry,) in struct.iter_unpack(">Q", raw):
            off = entry & OFFSET_MASK
            if off and not entry & L1_RESERVED and not off % cs:
                io.claim(off, cs, Ol.INACTIVE_L2)
    return snaps, length
