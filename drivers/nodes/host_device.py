"""The ``host_device`` driver: a block device as a block node (QEMU's file-posix host_device).

Sizes and limits come from the kernel (BLKGETSIZE64, BLKSSZGET, BLKPBSZGET, BLKIOMIN/BLKIOOPT,
BLKROGET, sysfs discard limits); discard is BLKDISCARD and write_zeroes BLKZEROOUT (only with
O_DIRECT, as in QEMU: both bypass the page cache). Opening for writing passes the safety check.
"""

from __future__ import annotations

import errno
import os
import stat

from rig.core.graph import OpenContext
from rig.core.limits import BlockLimits
from rig.core.node import Node, ReqFlags
from rig.core.options import Options
from rig.core.registry import register_driver
from rig.drivers import safety
from rig.drivers.ffi import libc
from rig.drivers.ffi.ioctls import ioctl_range, ioctl_read
from rig.drivers.nodes.posix import PosixNode
from rig.errors import RigError

_NOT_SUPPORTED = (errno.ENODEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTTY, errno.ENOTSUP)


def _sysfs_int(rdev: int, attr: str) -> int:
    path = f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}/{attr}"
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


@register_driver("host_device")
class HostDeviceNode(PosixNode):
    prefix = "host_device:"

    def __init__(self, filename: str, **kwargs: object) -> None:
        super().__init__(filename, **kwargs)  # type: ignore[arg-type]
        self.rdev = 0
        self.length = 0
        self._has_discard = True
        self._has_zeroout = True

    @classmethod
    def from_options(cls, opts: Options, ctx: OpenContext) -> Node:
        filename, aio = cls.parse_common(opts, ctx)
        allow = safety.allow_option(opts.str("x-allow", ""))
        st = safety.stat_device_node(
            filename, f"'host_device' driver requires '{filename}' to be either a character "
            "or block device")
        if not ctx.read_only and stat.S_ISBLK(st.st_mode):
            safety.check_writable(filename, allow)
        node = cls(filename, aio=aio, **ctx.node_kwargs())
        node.rdev = st.st_rdev
        node.open_fd()
        try:
            node.setup_block_device()
        except BaseException:
            node.close()
            raise
        return node

    def setup_block_device(self) -> None:
        if not self.read_only and ioctl_read(self.fd, "BLKROGET", "i"):
            raise RigError(f"The device is not writable: {os.strerror(errno.EACCES)} "
                           f"('{self.filename}' is read-only; open it read-only)")
        lbs = ioctl_read(self.fd, "BLKSSZGET", "i")
        pbs = ioctl_read(self.fd, "BLKPBSZGET", "I")
        io_opt = ioctl_read(self.fd, "BLKIOOPT", "I")
        self.length = ioctl_read(self.fd, "BLKGETSIZE64", "Q")
        base = self.base_limits(lbs)
        granularity = _sysfs_int(self.rdev, "queue/discard_granularity")
        max_discard = _sysfs_int(self.rdev, "queue/discard_max_bytes")
        self._has_discard = max_discard > 0
        self.limits = BlockLimits(
            request_alignment=base.request_alignment,
            buffer_alignment=base.buffer_alignment,
            opt_transfer=io_opt if io_opt and io_opt % base.request_alignment == 0 else 0,
            discard_granularity=granularity,
            physical_block_size=pbs,
        )

    def _getlength(self) -> int:
        return self.length

    def _truncate(self, length: int) -> None:
        if length == self.length:
            return
        raise OSError(errno.ENOTSUP, "Cannot grow or shrink a block device")

    def _discard(self, offset: int, length: int) -> None:
        """BLKDISCARD. Without O_DIRECT the range's dirty page cache is written back first: the
        kernel drops it unwritten before discarding, so on a device that keeps discarded data
        (QEMU's scsi-hd with discard=ignore, many SSDs) reads would go back to an older write.
        QEMU does not do this; the rig does, so a discard reads as zeroes or the latest data."""
        if not self._has_discard:
            raise OSError(errno.ENOTSUP, "BLKDISCARD: not supported by the device")
        if not self.cache_direct:
            libc.write_back(self.fd, offset, length)
        try:
            ioctl_range(self.fd, "BLKDISCARD", offset, length)
        except OSError as e:
            if e.errno in _NOT_SUPPORTED:
                self._has_discard = False
                raise OSError(errno.ENOTSUP, "BLKDISCARD: not supported by the device") from None
            raise

    def _write_zeroes(self, offset: int, length: int, flags: ReqFlags) -> None:
        # Without O_DIRECT the page cache would keep stale data over BLKZEROOUT (QEMU skips it).
        if not self.cache_direct or not self._has_zeroout:
            raise OSError(errno.ENOTSUP, "BLKZEROOUT: not used without O_DIRECT")
        try:
            ioctl_range(self.fd, "BLKZEROOUT", offset, length)
        except OSError as e:
            if e.errno in _NOT_SUPPORTED:
                self._has_zeroout = False
                raise OSError(errno.ENOTSUP, "BLKZEROOUT: not supported by the device") from None
            raise
