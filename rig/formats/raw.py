"""The ``raw`` format: guest data maps 1:1 onto the ``file`` child.

Like QEMU's raw-format it emits ``read_aio`` / ``write_aio`` to its child's chain before data
reads and writes, which is what a blkdebug node below it reacts to.
"""

from __future__ import annotations

import errno
from typing import ClassVar

from rig.core.node import Iov, ReqFlags
from rig.core.registry import register_driver
from rig.filters.base import Filter
from rig.formats import QCOW2_MAGIC


@register_driver("raw")
class RawFormat(Filter):
    """Raw format node. ``probed=True`` restricts writes to block 0 as QEMU does."""

    format_name = "raw"
    #: QEMU's raw format emits these before guest data reads and writes (none for
    #: write-zeroes or discard); see rig.filters.blkdebug_events.
    blkdebug_events: ClassVar[frozenset[str]] = frozenset({"read_aio", "write_aio"})

    #: Set on nodes the CLI created by probing (qemu-io without ``-f``).
    probed: bool = False

    def _preadv(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        if not (flags and flags & ReqFlags.PADDING):  # cheap when flag-less (the common case)
            self.emit_below("read_aio")
        self.child.preadv(offset, length, iov, flags)

    def _pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        if self.probed and offset < 512 and _looks_like_image_header(offset, iov):
            raise OSError(errno.EPERM, "write to block 0 of a probed raw image would change "
                          "its format (specify the format explicitly)")
        self.emit_below("write_aio")
        self.child.pwritev(offset, length, iov, flags)


def _looks_like_image_header(offset: int, iov: Iov) -> bool:
    if offset != 0 or not iov:
        return False
    return bytes(iov[0][:4]) == QCOW2_MAGIC
