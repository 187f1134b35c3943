"""The ``raw`` format: guest data maps 1:1 onto the ``file`` child, or onto a window of it
(QEMU's ``offset`` and ``size`` options).

Like QEMU's raw-format it emits ``read_aio`` / ``write_aio`` to its child's chain before data
reads and writes, which is what a blkdebug node below it reacts to. Its length is the child's
rounded up to 512 bytes, as QEMU's block layer counts whole sectors: the tail of a 320-byte file
reads as zeroes (the file node fills reads past its end with zeroes).
"""

from __future__ import annotations

import errno

from rig.core.node import BlockStatus, Iov, Node, ReqFlags
from rig.core.registry import register_driver
from rig.errors import ConfigError
from rig.filters.base import Filter
from rig.formats import QCOW2_MAGIC

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:
    from typing import ClassVar

    from rig.core.graph import OpenContext
    from rig.core.options import Options

SECTOR = 512


@register_driver("raw")
class RawFormat(Filter):
    """Raw format node. ``probed=True`` restricts writes to block 0 as QEMU does."""

    format_name = "raw"
    #: QEMU's raw format emits these before guest data reads and writes (none for
    #: write-zeroes or discard); see rig.filters.blkdebug_events.
    blkdebug_events: ClassVar[frozenset[str]] = frozenset({"read_aio", "write_aio"})

    #: Set on nodes the CLI created by probing (qemu-io without ``-f``).
    probed: bool = False
    #: Where the guest's byte 0 is in the child (QEMU's ``offset``), and the fixed guest size
    #: (``size``; None: the child's length minus the offset).
    offset: int = 0
    size: int | None = None

    @classmethod
    def from_options(cls, opts: Options, ctx: OpenContext) -> Node:
        offset = opts.size("offset", 0)
        size = opts.size("size", -1) if opts.has("size") else None
        node = cls(**ctx.node_kwargs())

        def window() -> None:
            real = node.child.getlength()
            if offset > real:
                raise ConfigError(f"Offset ({offset}) cannot be greater than size of the "
                                  f"containing file ({real})")
            if size is not None and real - offset < size:
                raise ConfigError(f"The sum of offset ({offset}) and size ({size}) has to be "
                                  f"smaller or equal to the  actual size of the containing "
                                  f"file ({real})")
            if size is not None and size % SECTOR:
                raise ConfigError(f"Specified size is not multiple of {SECTOR}")
            align = node.child.limits.request_alignment
            if offset % align:
                # QEMU's block layer pads each node's requests to its child's alignment; the
                # rig aligns once, at the backend, for the whole chain, so a window that
                # starts between two of the child's blocks could only send it unaligned
                # requests (found by tests/fuzz/test_fuzz_configs.py).
                raise ConfigError(f"raw offset {offset} is not a multiple of the request "
                                  f"alignment ({align}) of the node below: use an offset "
                                  f"that is, or open the image with cache.direct=off")
            node.offset, node.size = offset, size

        return node.open_child(ctx, window)

    def _preadv(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        if not (flags and flags & ReqFlags.PADDING):  # cheap when flag-less (the common case)
            self.emit_below("read_aio")
        self.child.preadv(offset + self.offset, length, iov, flags)

    def _pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        if self.probed and offset < 512 and _looks_like_image_header(offset, iov):
            raise OSError(errno.EPERM, "write to block 0 of a probed raw image would change "
                          "its format (specify the format explicitly)")
        self.emit_below("write_aio")
        self.child.pwritev(offset + self.offset, length, iov, flags)

    def direct(self, write: bool, offset: int, length: int) -> tuple[Node, int, int] | None:
        """Through the window, when no event below would see the request's read_aio or
        write_aio and the write cannot touch a probed image's block 0."""
        child = self.child
        if child.event_sink is not None or (write and self.probed and offset < 512):
            return None
        plan = child.direct(write, offset + self.offset, length)
        if plan is not None and write:
            self.write_gen += 1
        return plan

    def _write_zeroes(self, offset: int, length: int, flags: ReqFlags) -> None:
        self.child.write_zeroes(offset + self.offset, length, flags)

    def _discard(self, offset: int, length: int) -> None:
        self.child.discard(offset + self.offset, length)

    def _block_status(self, offset: int, length: int) -> BlockStatus:
        if not self.offset:
            return self.child.block_status(offset, length)
        st = self.child.block_status(offset + self.offset, length)
        return BlockStatus(offset, st.length, data=st.data, zero=st.zero,
                           allocated=st.allocated)

    def _getlength(self) -> int:
        if self.size is not None:
            return self.size
        length = self.child.getlength() - self.offset
        return -(-length // SECTOR) * SECTOR

    def _truncate(self, length: int) -> None:
        if self.size is not None:
            raise OSError(errno.ENOTSUP, "Cannot resize fixed-size raw disks")
        self.child.truncate(length + self.offset)


def _looks_like_image_header(offset: int, iov: Iov) -> bool:
    if offset != 0 or not iov:
        return False
    return bytes(iov[0][:4]) == QCOW2_MAGIC
