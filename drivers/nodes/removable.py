"""What every node with removable media shares: the node API's four verbs over a drive's own
primitives, and one lock policy.

The verbs are QEMU's (``bdrv_is_inserted``, ``bdrv_eject``, ``bdrv_lock_medium``, and a
media-changed query); the fixed-media defaults live in :class:`rig.core.node.Node`. A drive
implements ``_drive_status``, ``_move_tray``, ``_set_lock`` and ``_media_changed``; this mixin
adds the policy of Linux's cdrom layer: a locked medium refuses to leave (EBUSY, which is what
CDROMEJECT answers while CDROM_LOCKDOOR holds the door), unless the eject is forced, which
unlocks first (QEMU's ``eject force=true``).
"""

from __future__ import annotations

import errno
import os
from enum import IntEnum


class DriveStatus(IntEnum):
    """CDROM_DRIVE_STATUS's answers (linux/cdrom.h ``CDS_*``), used by every removable node."""

    NO_INFO = 0
    NO_DISC = 1
    TRAY_OPEN = 2
    DRIVE_NOT_READY = 3
    DISC_OK = 4


class RemovableMedia:
    """Mixin for a :class:`~rig.core.node.Node` whose medium can come and go. Put it first in
    the bases so its verbs replace the fixed-media defaults."""

    medium_locked: bool = False
    """What this node last asked with :meth:`lock_medium`."""

    # ------------------------------------------------------------------ verbs
    def is_inserted(self) -> bool:
        return self.drive_status() is DriveStatus.DISC_OK

    def media_changed(self) -> bool:
        """True once after each change of medium (the query clears it, as CDROM_MEDIA_CHANGED
        does)."""
        return self._media_changed()

    def eject(self, eject: bool = True, *, force: bool = False) -> None:
        """Open the tray (``eject``) or close it. A medium this node locked stays in (EBUSY)
        unless ``force``, which unlocks it first."""
        if eject and self.medium_locked:
            if not force:
                raise OSError(errno.EBUSY, f"eject: the medium in {self.drive_name()} is locked "
                              "(lock_medium(False) first, or force=True)")
            self.lock_medium(False)
        self._move_tray(eject)

    def lock_medium(self, locked: bool) -> None:
        self._set_lock(locked)
        self.medium_locked = locked

    def drive_status(self) -> DriveStatus:
        return self._drive_status()

    def drive_name(self) -> str:
        return type(self).__name__

    # ------------------------------------------------------------------ hooks
    def _drive_status(self) -> DriveStatus:
        raise NotImplementedError

    def _move_tray(self, open_tray: bool) -> None:
        raise NotImplementedError

    def _set_lock(self, locked: bool) -> None:
        raise NotImplementedError

    def _media_changed(self) -> bool:
        raise NotImplementedError


def no_medium(what: str) -> OSError:
    """ENOMEDIUM, as the kernel's removable-media drivers answer an open with no disc."""
    return OSError(errno.ENOMEDIUM, f"{what}: {os.strerror(errno.ENOMEDIUM)}")
