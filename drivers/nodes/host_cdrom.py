"""The ``host_cdrom`` driver: a CD/DVD drive (``/dev/srN``) as a block node with removable
media, through the kernel's cdrom layer (QEMU's file-posix host_cdrom).

* opened with ``O_NONBLOCK``, so an empty drive or an open tray still opens; read-write as
  QEMU allows (a block device then passes the safety check); a character or block device that
  is no CD drive opens too, without a medium (as in QEMU);
* ``is_inserted``: CDROM_DRIVE_STATUS is CDS_DISC_OK; ``drive_status()`` gives the whole answer,
  ``disc_status()`` CDROM_DISC_STATUS's;
* ``eject``: CDROMEJECT / CDROMCLOSETRAY; ``lock_medium``: CDROM_LOCKDOOR. The kernel refuses
  CDROMEJECT with EBUSY while the door is locked or another process has the drive open;
* ``media_changed``: CDROM_MEDIA_CHANGED for the current slot. The kernel keeps the change
  events for ioctl callers apart from those of the block layer, and clears them on reading.
  After a change the node opens the drive again (sr reads the new medium's size on open);
* the length is asked each time (BLKGETSIZE64).
"""

from __future__ import annotations

import errno
import os
import stat

from rig.core.graph import OpenContext
from rig.core.limits import BlockLimits
from rig.core.node import Node
from rig.core.options import Options
from rig.core.registry import register_driver
from rig.drivers import safety
from rig.drivers.ffi.ioctls import CDSL_CURRENT, ioctl, ioctl_read
from rig.drivers.nodes.posix import PosixNode, open_error, stat_path
from rig.drivers.nodes.removable import DriveStatus, RemovableMedia


@register_driver("host_cdrom")
class HostCdromNode(RemovableMedia, PosixNode):
    prefix = "host_cdrom:"

    @classmethod
    def from_options(cls, opts: Options, ctx: OpenContext) -> Node:
        filename, aio = cls.parse_common(opts, ctx)
        # As QEMU: read-write allowed (a block device passes the safety check first), opened
        # before its type is checked, and any character or block device opens (qemu-iotests
        # 226 opens /dev/null); one that is no CD drive has no medium.
        allow = safety.allow_option(opts.str("x-allow", ""))
        checked = not ctx.read_only and stat.S_ISBLK(stat_path(filename).st_mode)
        if checked:
            safety.check_writable(filename, allow)
        node = cls(filename, aio=aio, **ctx.node_kwargs())
        st = node.open_checked(f"'host_cdrom' driver requires '{filename}' to be either a "
                               "character or block device", device=True)  # QEMU's words
        node.block = stat.S_ISBLK(st.st_mode)
        try:
            if node.block and not ctx.read_only and not checked:
                safety.check_writable(filename, allow)
            try:
                ioctl(node.fd, "CDROM_GET_CAPABILITY")
            except OSError as e:
                if e.errno not in (errno.ENOTTY, errno.EINVAL, errno.ENOSYS):
                    raise
                node.drive = False
                node.limits = node.base_limits(None)
                return node
            ioctl(node.fd, "CDROM_MEDIA_CHANGED", CDSL_CURRENT)  # from now on, not since boot
            lbs = ioctl_read(node.fd, "BLKSSZGET", "i") if node.is_inserted() else 2048
            base = node.base_limits(lbs)
            node.limits = BlockLimits(request_alignment=base.request_alignment,
                                      buffer_alignment=base.buffer_alignment,
                                      physical_block_size=lbs)
        except OSError as e:
            node.close()
            raise open_error(filename, e) from None
        except BaseException:
            node.close()
            raise
        return node

    #: A CD drive (CDROM_GET_CAPABILITY answers); any other device opens without a medium.
    drive = True
    #: A block device (its length from BLKGETSIZE64; else where ``lseek`` ends).
    block = True

    def open_flags(self) -> int:
        """O_NONBLOCK: an empty or open drive still opens (as QEMU's cdrom)."""
        return super().open_flags() | os.O_NONBLOCK

    def drive_name(self) -> str:
        return self.filename

    def disc_status(self) -> int:
        """CDROM_DISC_STATUS: CDS_AUDIO, CDS_DATA_1 ... or CDS_NO_DISC / CDS_TRAY_OPEN."""
        return ioctl(self.fd, "CDROM_DISC_STATUS", CDSL_CURRENT)

    # ------------------------------------------------------------- media hooks
    def _drive_status(self) -> DriveStatus:
        if not self.drive:
            return DriveStatus.NO_INFO
        value = ioctl(self.fd, "CDROM_DRIVE_STATUS", CDSL_CURRENT)
        try:
            return DriveStatus(value)
        except ValueError:
            return DriveStatus.NO_INFO

    def _move_tray(self, open_tray: bool) -> None:
        ioctl(self.fd, "CDROMEJECT" if open_tray else "CDROMCLOSETRAY")

    def _set_lock(self, locked: bool) -> None:
        ioctl(self.fd, "CDROM_LOCKDOOR", int(locked))

    def _media_changed(self) -> bool:
        if not self.drive:
            return False
        changed = bool(ioctl(self.fd, "CDROM_MEDIA_CHANGED", CDSL_CURRENT))
        if changed:
            self.reopen()
        return changed

    def reopen(self) -> None:
        """Open the drive again: sr checks the medium and reads its size on open, so an fd
        opened before a change keeps the old size until then."""
        old = self.fd
        self.open_fd()
        os.close(old)

    # ------------------------------------------------------------- data
    # Reads go to the kernel as they are: without a disc, sr answers them itself.
    def _getlength(self) -> int:
        if not self.block:
            return os.lseek(self.fd, 0, os.SEEK_END)
        return ioctl_read(self.fd, "BLKGETSIZE64", "Q")
