"""The ``file`` driver: a regular file as a block node (QEMU's file-posix ``file``)."""

from __future__ import annotations

import errno
import os

from rig.core.graph import OpenContext
from rig.core.node import BlockStatus, Node, ReqFlags
from rig.core.options import Options
from rig.core.registry import register_driver
from rig.drivers.nodes.posix import PosixNode


@register_driver("file")
class FileNode(PosixNode):
    prefix = "file:"

    @classmethod
    def from_options(cls, opts: Options, ctx: OpenContext) -> Node:
        filename, aio = cls.parse_common(opts, ctx)
        node = cls(filename, aio=aio, **ctx.node_kwargs())
        node.open_checked(f"'file' driver requires '{filename}' to be a regular file",
                          device=False)
        try:
            node.limits = node.base_limits(None)
        except BaseException:
            node.close()
            raise
        node._has_zero_range = True
        node._has_discard = True
        return node

    _has_zero_range = True
    _has_discard = True

    def _getlength(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_END)

    def _truncate(self, length: int) -> None:
        os.ftruncate(self.fd, length)

    def _discard(self, offset: int, length: int) -> None:
        if not self._has_discard:
            raise OSError(errno.ENOTSUP, "discard: not supported by the file system")
        from rig.drivers.ffi import libc  # ctypes' find_library runs ldconfig: not at start-up

        try:
            libc.fallocate(self.fd, libc.FALLOC_FL_PUNCH_HOLE | libc.FALLOC_FL_KEEP_SIZE,
                           offset, length)
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                self._has_discard = False
                raise OSError(errno.ENOTSUP, "discard: not supported by the file system") from None
            raise

    def _write_zeroes(self, offset: int, length: int, flags: ReqFlags) -> None:
        """QEMU's order: punch a hole if unmapping is allowed, else ZERO_RANGE, else ENOTSUP
        so the chokepoint writes a zero buffer."""
        from rig.drivers.ffi import libc

        if flags & ReqFlags.MAY_UNMAP and self._has_discard:
            try:
                libc.fallocate(self.fd, libc.FALLOC_FL_PUNCH_HOLE | libc.FALLOC_FL_KEEP_SIZE,
                               offset, length)
                return
            except OSError as e:
                if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
        if self._has_zero_range:
            try:
                libc.fallocate(self.fd, libc.FALLOC_FL_ZERO_RANGE, offset, length)
                return
            except OSError as e:
                if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    self._has_zero_range = False
                elif e.errno != errno.EINVAL:
                    raise
        raise OSError(errno.ENOTSUP, "write_zeroes: not supported by the file system")

    def _block_status(self, offset: int, length: int) -> BlockStatus:
        """SEEK_DATA / SEEK_HOLE, as QEMU's find_allocation."""
        try:
            data = os.lseek(self.fd, offset, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no data after offset: a hole up to EOF
                return BlockStatus(offset, length, data=False, zero=True, allocated=True)
            return BlockStatus(offset, length, data=True, zero=False, allocated=True)
        if data > offset:
            return BlockStatus(offset, min(length, data - offset), data=False, zero=True,
                               allocated=True)
        try:
            hole = os.lseek(self.fd, offset, os.SEEK_HOLE)
        except OSError:
            hole = offset + length
        return BlockStatus(offset, min(length, max(hole - offset, 1)), data=True, zero=False,
                           allocated=True)
