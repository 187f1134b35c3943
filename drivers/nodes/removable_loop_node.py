"""The ``removable_loop`` driver: a :class:`~rig.drivers.removable_loop.LoopDrive` as a block
node with removable media, so the node API's media verbs (and code that handles a medium coming
and going) are testable on the host.

```python
rig.open({"driver": "removable_loop", "filename": "cd1.iso"}, read_only=True)
rig.open({"driver": "removable_loop"}, read_only=True)          # an empty drive
```

The node reads through its own fd on ``/dev/loopN`` (O_DIRECT with ``cache.direct``), so it sees
what any other program sees. ``media_changed()`` compares the kernel's disk sequence number, so a
change made by anyone is reported once. ``change_medium()`` and ``insert_medium()`` are the
host-side operations (QMP's ``blockdev-change-medium`` / ``blockdev-insert-medium``).
"""

from __future__ import annotations

from rig.core.graph import OpenContext
from rig.core.limits import BlockLimits
from rig.core.node import Iov, Node, ReqFlags
from rig.core.options import Options
from rig.core.registry import register_driver
from rig.drivers.nodes.posix import PosixNode
from rig.drivers.nodes.removable import DriveStatus, RemovableMedia, no_medium
from rig.drivers.removable_loop import LoopDrive
from rig.errors import ConfigError


@register_driver("removable_loop")
class RemovableLoopNode(RemovableMedia, PosixNode):
    def __init__(self, drive: LoopDrive, **kwargs: object) -> None:
        super().__init__(drive.path, **kwargs)  # type: ignore[arg-type]
        self.drive = drive
        self._seen_diskseq = drive.diskseq()

    @classmethod
    def from_options(cls, opts: Options, ctx: OpenContext) -> Node:
        medium = opts.str("filename")
        block_size = opts.int("block-size", 512, minimum=512)
        if not ctx.read_only:
            raise ConfigError("'removable_loop' media are read-only (LOOP_CHANGE_FD works only "
                              "on read-only loop devices): open it read-only")
        drive = LoopDrive(medium, block_size=block_size)
        try:
            node = cls(drive, **ctx.node_kwargs())
        except BaseException:
            drive.close()
            raise
        try:
            node.open_fd()
            base = node.base_limits(block_size)
            node.limits = BlockLimits(request_alignment=max(base.request_alignment, 1),
                                      buffer_alignment=base.buffer_alignment,
                                      physical_block_size=block_size)
        except BaseException:
            node.close()
            raise
        return node

    def describe(self) -> str:
        return f"{self.drive.path} ({self.drive.medium or 'no medium'})"

    def drive_name(self) -> str:
        return self.drive.path

    # ------------------------------------------------------------- host side
    def change_medium(self, image: str, *, force: bool = False) -> None:
        """QMP's ``blockdev-change-medium``: open the tray (refused while locked unless
        ``force``), put ``image`` in, close the tray."""
        self.eject(True, force=force)
        self.drive.insert(image)

    def insert_medium(self, image: str) -> None:
        self.drive.insert(image)

    # ------------------------------------------------------------- media hooks
    def _drive_status(self) -> DriveStatus:
        if self.drive.tray_open:
            return DriveStatus.TRAY_OPEN
        return DriveStatus.DISC_OK if self.drive.size() else DriveStatus.NO_DISC

    def _move_tray(self, open_tray: bool) -> None:
        if open_tray:
            self.drive.remove(open_tray=True)
        else:
            self.drive.close_tray()

    def _set_lock(self, locked: bool) -> None:
        """Nothing to tell the kernel: a loop device has no door. The policy is the mixin's."""

    def _media_changed(self) -> bool:
        seq = self.drive.diskseq()
        changed, self._seen_diskseq = seq != self._seen_diskseq, seq
        return changed

    # ------------------------------------------------------------- data
    def _preadv(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        if not self.drive.size():
            raise no_medium(f"read from {self.drive.path}")
        super()._preadv(offset, length, iov, flags)

    def _getlength(self) -> int:
        return self.drive.size()

    def _close(self) -> None:
        try:
            super()._close()
        finally:
            self.drive.close()
