"""Lab tests that a client runs on the disk's host (``tests/lab/hosts/test_two_hosts.py``):
not collected by the suite itself (the file name does not start with ``test_``); each uses
``rig_lab_disk``, so ``--rig-lab-coordinator`` routes it. One passes, one fails and one skips on
purpose, so the client can check that all three come back; one sleeps, to be killed."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import pytest

from rig.drivers.identity import identity_by_number
from rig.drivers.lab.labdisk import LabDisk
from rig.drivers.safety import block_number

PATTERN = b"blockrig-lab-host\n".ljust(4096, b".")


def test_writes_the_disk_it_was_given(rig_lab_disk: Callable[..., LabDisk],
                                      record_property: Callable[[str, object], None]) -> None:
    disk = rig_lab_disk()
    number = block_number(disk.path)
    assert number is not None, disk.path
    identity = identity_by_number(number)
    assert identity.wwn, f"{disk.path}: no WWN"
    record_property("lab_host", socket.gethostname())
    record_property("lab_disk", f"{disk.path} {identity.wwn}")
    fd = os.open(disk.path, os.O_RDWR | os.O_DIRECT)
    try:
        import mmap

        buf = mmap.mmap(-1, 4096)
        buf[:] = PATTERN
        assert os.pwritev(fd, [buf], 1 << 20) == 4096
        back = mmap.mmap(-1, 4096)
        assert os.preadv(fd, [back], 1 << 20) == 4096
        assert bytes(back) == PATTERN
    finally:
        os.close(fd)


def test_fails_on_purpose(rig_lab_disk: Callable[..., LabDisk]) -> None:
    rig_lab_disk(destructive=False)
    raise AssertionError(f"deliberate failure on {socket.gethostname()}")


def test_skips_on_purpose(rig_lab_disk: Callable[..., LabDisk]) -> None:
    rig_lab_disk(destructive=False)
    pytest.skip(f"deliberate skip on {socket.gethostname()}")


def test_sleeps(rig_lab_disk: Callable[..., LabDisk]) -> None:
    rig_lab_disk(destructive=False)
    time.sleep(600)
