"""The sg node's removable-media verbs, on the host, over a FAKE SCSI CD drive
(tests/scsi/fake_scsi.py, which follows what QEMU's scsi-cd did in the VM lab). The real drive
is tested in the VM lab (test_removable_vm.py): QMP eject and change, seen through sg and
host_cdrom."""

from __future__ import annotations

import errno

import pytest

from rig.drivers.nodes.removable import DriveStatus
from rig.drivers.sg.node import SgNode
from rig.errors import ConfigError
from tests.scsi.fake_scsi import FakeScsiTarget, open_fake_node

CD = 2048


def _cd(blocks: int = 64) -> FakeScsiTarget:
    target = FakeScsiTarget(blocks=blocks, block_size=CD, pdt=5, removable=True)
    assert target.data is not None
    target.data[:4] = b"ONE!"
    return target


def test_cd_drive_opens_read_only_with_its_medium(monkeypatch: pytest.MonkeyPatch) -> None:
    target = _cd()
    node = open_fake_node(monkeypatch, target)
    assert node.removable and node.block_size == CD
    assert node.getlength() == 64 * CD and node.is_inserted()
    assert node.drive_status() is DriveStatus.DISC_OK
    assert not node.media_changed()
    buf = memoryview(bytearray(CD))
    node.preadv(0, CD, [buf])
    assert bytes(buf[:4]) == b"ONE!"
    with pytest.raises(ConfigError, match="read-only"):
        open_fake_node(monkeypatch, _cd(), read_only=False)


def test_change_is_seen_once_and_the_capacity_follows(monkeypatch: pytest.MonkeyPatch) -> None:
    target = _cd()
    node = open_fake_node(monkeypatch, target)
    target.change_medium(b"TWO!" + bytes(128 * CD - 4))  # the host swaps the disc (QMP)
    buf = memoryview(bytearray(CD))
    with pytest.raises(OSError) as e:  # the UNIT ATTENTION fails the first command, as in sr
        node.preadv(0, CD, [buf])
    assert e.value.errno == errno.EIO and "[6/3A/00]" in str(e.value).upper()
    assert node.media_changed()
    assert not node.media_changed()
    assert node.getlength() == 128 * CD
    node.preadv(0, CD, [buf])
    assert bytes(buf[:4]) == b"TWO!"


def test_empty_drive_and_tray(monkeypatch: pytest.MonkeyPatch) -> None:
    target = _cd()
    node = open_fake_node(monkeypatch, target)
    target.change_medium(None)  # ejected from the host
    assert node.drive_status() is DriveStatus.TRAY_OPEN
    assert not node.is_inserted() and node.getlength() == 0
    assert node.media_changed()
    node.eject(False)  # close the tray: still no disc
    assert not target.tray_open
    assert node.drive_status() is DriveStatus.NO_DISC


def test_lock_and_eject(monkeypatch: pytest.MonkeyPatch) -> None:
    target = _cd()
    node = open_fake_node(monkeypatch, target)
    node.lock_medium(True)
    assert target.locked and target.commands[-1] == 0x1E
    with pytest.raises(OSError) as e:
        node.eject()
    assert e.value.errno == errno.EBUSY and target.commands[-1] == 0x1E  # nothing sent
    node.eject(force=True)  # PREVENT ALLOW (allow), then START STOP UNIT (LoEj)
    assert target.commands[-2:] == [0x1E, 0x1B]
    assert not target.locked and target.tray_open
    assert node.drive_status() is DriveStatus.TRAY_OPEN


def test_fixed_disk_keeps_fixed_media_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    node: SgNode = open_fake_node(monkeypatch, FakeScsiTarget(), read_only=False)
    assert not node.removable and node.is_inserted() and not node.media_changed()
    node.lock_medium(True)  # nothing to lock
    with pytest.raises(OSError) as e:
        node.eject()
    assert e.value.errno == errno.ENOTSUP
