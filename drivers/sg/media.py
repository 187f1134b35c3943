"""Removable media over SCSI, for the ``sg`` node: the node API's media verbs as the commands
Linux's sr driver sends for the same ioctls.

* ``drive_status``: sr_drive_status's order. TEST UNIT READY (GOOD: disc ok; NOT READY 04/01:
  becoming ready), then GET EVENT STATUS NOTIFICATION's media status (present, door open), then
  the sense of the TUR (04/02: tray open, 3A: no disc).
* ``eject``: START STOP UNIT with LoEj (Start=0 opens the tray, Start=1 loads);
  ``lock_medium``: PREVENT ALLOW MEDIUM REMOVAL.
* ``media_changed``: a UNIT ATTENTION seen on any command since the last query (a device
  reports 06/28/00 "not ready to ready change, medium may have changed" and 06/29/xx "power on or
  reset" once, to whichever command comes first), or a GESN media event (new media, media
  removal, media changed), as sr_check_events polls them.
* A UNIT ATTENTION on a data command fails it (EIO), as the kernel does for removable devices
  (scsi_check_sense marks the device changed and does not retry); the capacity is read again
  before the next request.
"""

from __future__ import annotations

import errno

from rig.drivers.nodes.removable import DriveStatus, RemovableMedia
from rig.drivers.sg.sgio import SgResult
from rig.scsi import cdb
from rig.scsi.asc import NOT_READY, UNIT_ATTENTION
from rig.scsi.responses import READ_CAPACITY_10_DATA, decode_gesn

#: GESN media event codes that mean the medium changed (MMC: new media, media removal, changed).
_CHANGE_EVENTS = (2, 3, 4)
_UA_RETRIES = 3


class SgMedia(RemovableMedia):
    """Mixin for the sg node. ``removable`` is the INQUIRY RMB bit: without it the node keeps
    the fixed-media answers (always inserted, never changed, no tray)."""

    removable: bool = False
    _changed: bool = False

    def _run(self, command: cdb.Command) -> SgResult:
        raise NotImplementedError

    def note_outcome(self, r: SgResult) -> SgResult:
        """Remember a UNIT ATTENTION (called for every command the node sends)."""
        sense = r.outcome.sense
        if self.removable and sense is not None and sense.sense_key == UNIT_ATTENTION:
            self._changed = True
        return r

    def _retrying_unit_attention(self, command: cdb.Command) -> SgResult:
        """The command, sent again after a UNIT ATTENTION (which is noted), as the kernel's
        scsi_test_unit_ready does."""
        r = self._run(command)
        for _ in range(_UA_RETRIES):
            sense = r.outcome.sense
            if r.ok or sense is None or sense.sense_key != UNIT_ATTENTION:
                break
            r = self._run(command)
        return r

    # ------------------------------------------------------------------ verbs
    def is_inserted(self) -> bool:
        return not self.removable or super().is_inserted()

    def media_changed(self) -> bool:
        return self.removable and super().media_changed()

    def eject(self, eject: bool = True, *, force: bool = False) -> None:
        if not self.removable:
            raise OSError(errno.ENOTSUP, "eject: the device reports no removable medium (RMB=0)")
        super().eject(eject, force=force)

    def lock_medium(self, locked: bool) -> None:
        if self.removable:
            super().lock_medium(locked)

    def clear_media_changed(self) -> None:
        self._changed = False

    def media_event(self) -> dict[str, int] | None:
        """GESN's media event descriptor (event code, media present, door open), or None when
        the device does not answer it."""
        r = self._run(cdb.get_event_status_notification())
        if not r.ok or len(r.data) < 8:
            return None
        media: dict[str, int] | None = decode_gesn(r.data).get("media")
        if media is not None and media["media_event_code"] in _CHANGE_EVENTS:
            self._changed = True
        return media

    def read_capacity_now(self) -> tuple[int, int] | None:
        """(blocks, block size) of the medium in the drive, or None without one."""
        r = self._retrying_unit_attention(cdb.read_capacity_10())
        if not r.ok or len(r.data) < 8:
            return None
        rec = READ_CAPACITY_10_DATA.decode(r.data)
        return rec.num("returned_lba") + 1, rec.num("block_length")

    # ------------------------------------------------------------------ hooks
    def _drive_status(self) -> DriveStatus:
        tur = self._retrying_unit_attention(cdb.test_unit_ready())
        if tur.ok:
            return DriveStatus.DISC_OK
        sense = tur.outcome.sense
        if sense is not None and sense.matches(NOT_READY, 0x04, 0x01):
            return DriveStatus.DRIVE_NOT_READY
        media = self.media_event()
        if media is not None:
            if media["media_present"]:
                return DriveStatus.DISC_OK
            return DriveStatus.TRAY_OPEN if media["door_open"] else DriveStatus.NO_DISC
        if sense is not None and sense.matches(NOT_READY, 0x04, 0x02):
            return DriveStatus.TRAY_OPEN
        if sense is not None and sense.matches(NOT_READY, 0x04):
            return DriveStatus.DISC_OK
        if sense is not None and sense.asc == 0x3A:
            return DriveStatus.NO_DISC
        return DriveStatus.TRAY_OPEN

    def _move_tray(self, open_tray: bool) -> None:
        self._run(cdb.start_stop_unit(start=not open_tray, loej=True)).check()

    def _set_lock(self, locked: bool) -> None:
        self._run(cdb.prevent_allow_medium_removal(locked)).check()

    def _media_changed(self) -> bool:
        self._retrying_unit_attention(cdb.test_unit_ready())
        self.media_event()
        changed, self._changed = self._changed, False
        return changed
