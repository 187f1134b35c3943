"""Removable media from pytest with ``rig_cdrom``: a complete example.

The drive is a real CD/DVD drive where the machine has one (``/dev/sr0``: in the VM lab's guest,
QEMU's ``scsi-cd``), and a loop device standing in for one where it does not, so the same test
runs on any Linux host as root. ``drive.kind`` says which it got.

Run ``pytest examples/test_cdrom_media.py``; tests/plugin/test_examples.py runs this file on
the stand-in and, with ``--rig-vm``, on the VM lab's CD-ROM, so it stays true on both.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

from rig.drivers.nodes.removable import DriveStatus
from rig.fixtures.scsi_fixtures import CdDrive

BLOCK = 2048


def test_a_locked_disc_stays_in_and_an_ejected_one_comes_back(
        rig_cdrom: Callable[..., CdDrive]) -> None:
    drive = rig_cdrom()
    blk = drive.backend
    assert blk.is_inserted() and drive.node.drive_status() is DriveStatus.DISC_OK
    first = blk.pread(0, BLOCK)
    assert first.strip(b"\0")  # a disc with something on it

    blk.lock_medium(True)  # what a program holding the disc does
    with pytest.raises(OSError) as e:
        blk.eject()
    assert e.value.errno == errno.EBUSY and blk.is_inserted()

    blk.lock_medium(False)
    blk.eject()  # the tray opens: no medium, nothing to read
    assert not blk.is_inserted() and blk.getlength() == 0
    assert drive.node.drive_status() is DriveStatus.TRAY_OPEN
    with pytest.raises(OSError):
        blk.pread(0, BLOCK)

    drive.reload()  # the tray closes on the disc
    assert blk.is_inserted() and drive.node.drive_status() is DriveStatus.DISC_OK
    assert blk.getlength() > 0 and blk.pread(0, BLOCK) == first
