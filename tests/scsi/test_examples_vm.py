"""The example files that need real SCSI devices, run on real ones: with ``--rig-vm`` on a host
without them, in the VM lab's guest (its scratch SCSI disk, QEMU's ``scsi-hd``, and its CD-ROM,
QEMU's ``scsi-cd``). The host half (the stand-in drive, the skip without sg) is
tests/plugin/test_examples.py."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest

from examples import test_cdrom_media as cdrom_example
from examples.test_sg_write_cache import (
    test_an_fsync_flushes_only_a_disk_with_a_write_cache,
    test_the_write_cache_round_trips,
)
from rig.fixtures.scsi_fixtures import CdDrive

__all__ = ["test_an_fsync_flushes_only_a_disk_with_a_write_cache",
           "test_the_write_cache_round_trips"]


@pytest.mark.rig_needs("cdrom")
def test_the_cdrom_example_on_a_real_drive(rig_cdrom: Callable[..., CdDrive]) -> None:
    cdrom_example.test_a_locked_disc_stays_in_and_an_ejected_one_comes_back(
        functools.partial(rig_cdrom, "sr"))
