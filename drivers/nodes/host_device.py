"""The ``host_device`` driver: a block device as a block node (QEMU's file-posix host_device).

Sizes and limits come from the kernel (BLKGETSIZE64, BLKSSZGET, BLKPBSZGET, BLKIOMIN/BLKIOOPT,
BLKROGET, sysfs discard limits); discard is BLKDISCARD and write_zeroes BLKZEROOUT (only with
O_DIRECT, as in QEMU: both bypass the page cache). Opening for writing passes the safety check.

Limits as QEMU 7.2's file-posix takes them (``raw_refresh_limits``): the O_DIRECT request
alignment from BLKSSZGET, ``max_hw_transfer`` from BLKSECTGET (sectors, i.e. ``max_sectors_kb``)
and ``max_hw_iov`` from ``queue/max_segments``; one departure: with O_DIRECT the buffer
alignment is at least the logical block size (``_buffer_alignment``), not only what the probe
accepts. Like QEMU, the node does not split a request at ``max_hw_transfer`` (the kernel
does): one guest request is one ``preadv``/``pwritev``. The rig's own option
``x-max-transfer`` (``hw``: at ``max_hw_transfer``; or a size) makes it the node's
``max_transfer``, so the chokepoint splits there and every syscall is at most one device
command.
"""

from __future__ import annotations

import errno
import os
import stat

from rig.core import values
from rig.core.graph import OpenContext
from rig.core.limits import BlockLimits
from rig.core.node import Node, ReqFlags
from rig.core.options import Options
from rig.core.registry import register_driver
from rig.drivers import safety
from rig.drivers.ffi import libc
from rig.drivers.ffi.ioctls import ioctl_range, ioctl_read
from rig.drivers.nodes.block_queue import read_int
from rig.drivers.nodes.posix import PosixNode, stat_path
from rig.errors import ConfigError, RigError

_NOT_SUPPORTED = (errno.ENODEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTTY, errno.ENOTSUP)
#: QEMU's BDRV_REQUEST_MAX_BYTES: a larger BLKSECTGET answer is ignored, as QEMU does.
_REQUEST_MAX_BYTES = (2**31 - 1) // 512 * 512


def parse_max_transfer(value: object) -> int | str:
    """``x-max-transfer``: ``hw`` or a size in bytes (0: do not split, QEMU's behaviour)."""
    if isinstance(value, str) and value.strip().lower() == "hw":
        return "hw"
    return values.size("x-max-transfer", value, maximum=_REQUEST_MAX_BYTES)


def max_hw_transfer(fd: int) -> int:
    """QEMU's hdev_get_max_hw_transfer: BLKSECTGET (an unsigned short of sectors) x 512."""
    try:
        sectors = ioctl_read(fd, "BLKSECTGET", "H")
    except OSError:
        return 0
    return sectors * 512 if 0 < sectors * 512 <= _REQUEST_MAX_BYTES else 0


@register_driver("host_device")
class HostDeviceNode(PosixNode):
    prefix = "host_device:"

    def __init__(self, filename: str, **kwargs: object) -> None:
        super().__init__(filename, **kwargs)  # type: ignore[arg-type]
        self.rdev = 0
        self.length = 0
        self._has_discard = True
        self._has_zeroout = True
        #: ``x-max-transfer``: 0 (do not split, as QEMU), ``"hw"`` or bytes.
        self.split_at: int | str = 0

    @classmethod
    def from_options(cls, opts: Options, ctx: OpenContext) -> Node:
        filename, aio = cls.parse_common(opts, ctx)
        allow = safety.allow_option(opts.str("x-allow", ""))
        # The safety check comes before a block device is opened for writing; QEMU's order
        # (open, then the type check) for the rest (qemu-iotests 226).
        checked = not ctx.read_only and stat.S_ISBLK(stat_path(filename).st_mode)
        if checked:
            safety.check_writable(filename, allow)
        split_at = parse_max_transfer(opts.raw("x-max-transfer", 0))
        node = cls(filename, aio=aio, **ctx.node_kwargs())
        node.split_at = split_at
        st = node.open_checked(f"'host_device' driver requires '{filename}' to be either a "
                               "character or block device", device=True)
        node.rdev = st.st_rdev
        try:
            if stat.S_ISBLK(st.st_mode):
                if not ctx.read_only and not checked:  # a block device there only now
                    safety.check_writable(filename, allow)
                node.setup_block_device()
            else:
                node.setup_char_device()
        except BaseException:
            node.close()
            raise
        return node

    def setup_char_device(self) -> None:
        """A character device (QEMU opens ``/dev/null`` too): no block ioctls; the length is
        where ``lseek`` ends, no discard, no zero-out."""
        self.length = os.lseek(self.fd, 0, os.SEEK_END)
        self._has_discard = self._has_zeroout = False
        self.limits = self.base_limits(None)

    def setup_block_device(self) -> None:
        if not self.read_only and ioctl_read(self.fd, "BLKROGET", "i"):
            raise RigError(f"The device is not writable: {os.strerror(errno.EACCES)} "
                           f"('{self.filename}' is read-only; open it read-only)")
        lbs = ioctl_read(self.fd, "BLKSSZGET", "i")
        pbs = ioctl_read(self.fd, "BLKPBSZGET", "I")
        io_opt = ioctl_read(self.fd, "BLKIOOPT", "I")
        self.length = ioctl_read(self.fd, "BLKGETSIZE64", "Q")
        base = self.base_limits(lbs)
        granularity = read_int(self.rdev, "discard_granularity")
        max_discard = read_int(self.rdev, "discard_max_bytes")
        self._has_discard = max_discard > 0
        hw_transfer = max_hw_transfer(self.fd)
        self.limits = BlockLimits(
            request_alignment=base.request_alignment,
            buffer_alignment=self._buffer_alignment(base.buffer_alignment, lbs),
            max_transfer=self._max_transfer(base.request_alignment, hw_transfer),
            opt_transfer=io_opt if io_opt and io_opt % base.request_alignment == 0 else 0,
            discard_granularity=granularity,
            physical_block_size=pbs,
            max_hw_transfer=hw_transfer,
            max_hw_iov=read_int(self.rdev, "max_segments"),
        )

    def _buffer_alignment(self, probed: int, logical_block_size: int) -> int:
        """With O_DIRECT, buffers aligned to at least a logical block, even where the kernel
        accepts less (since Linux 6.0 a buffer only needs the queue's DMA alignment, 512 bytes
        by default). A driver may mishandle a piece of a block in one memory page and the rest in
        the next: null_blk (memory-backed, 4096-byte blocks, Linux 6.1) reads a block's last
        512 bytes back as zeroes through a buffer at a page + 512 (docs/vm-lab.md, "Found with
        it"). QEMU uses the probed alignment; the rig bounces such a buffer through an aligned
        one instead."""
        return max(probed, logical_block_size) if self.cache_direct else probed

    def _max_transfer(self, alignment: int, hw_transfer: int) -> int:
        """The node's ``max_transfer`` from ``x-max-transfer`` (0 by default, as QEMU)."""
        if self.split_at == "hw":
            if hw_transfer < alignment:
                raise ConfigError(f"x-max-transfer=hw: the kernel reports no max transfer for "
                                  f"'{self.filename}' (BLKSECTGET); give a size instead")
            return hw_transfer - hw_transfer % alignment
        assert isinstance(self.split_at, int)
        if self.split_at % alignment:
            raise ConfigError(f"x-max-transfer {self.split_at} is not a multiple of the request "
                              f"alignment of '{self.filename}' ({alignment} bytes)")
        return self.split_at

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
