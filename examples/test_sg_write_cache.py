"""A disk's volatile write cache from pytest with ``rig_sg``: a complete example.

Whether a flush test means anything depends on the disk: with its write cache on (WCE=1) a
completed write may still be only in the cache, and the kernel sends SYNCHRONIZE CACHE for an
fsync; with it off, every completed write is on the medium and the kernel sends no flush at all.
``rig_sg`` gives the ``sg`` node of a real SCSI disk, which reads and sets WCE in the disk's
Caching mode page, so the test states which case it is testing and can check both.

It needs a SCSI disk from a lab inventory (``--rig-lab lab.toml --rig-allow-destructive``).
With ``--rig-vm`` on a machine without one, the tests run in the VM lab's guest on its scratch
SCSI disk (QEMU's ``scsi-hd``); tests/scsi/test_examples_vm.py runs them there so they stay
true. The fixture puts the disk's write cache back as it found it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from rig.fixtures.scsi_fixtures import SgDisk


def flushes_sent(disk: str) -> int:
    """Flush requests the kernel has completed on ``disk`` (the 16th field of
    /sys/block/X/stat, Linux 5.5 and later)."""
    with open(f"/sys/class/block/{os.path.basename(os.path.realpath(disk))}/stat") as f:
        return int(f.read().split()[15])


def write_and_fsync(disk: str) -> int:
    """Write a block through the kernel's block device and fsync it: the flushes it took."""
    before = flushes_sent(disk)
    fd = os.open(disk, os.O_WRONLY)
    try:
        os.pwrite(fd, b"\xa5" * 4096, 1 << 20)
        os.fsync(fd)
    finally:
        os.close(fd)
    return flushes_sent(disk) - before


@pytest.mark.rig_needs("sg")
def test_the_write_cache_round_trips(rig_sg: Callable[..., SgDisk]) -> None:
    sg = rig_sg()
    was = sg.node.write_cache
    sg.node.set_write_cache(not was)
    assert sg.node.write_cache is (not was)
    sg.node.set_write_cache(was)
    assert sg.node.write_cache is was


@pytest.mark.rig_needs("sg")
def test_an_fsync_flushes_only_a_disk_with_a_write_cache(rig_sg: Callable[..., SgDisk]) -> None:
    sg = rig_sg()
    sg.node.set_write_cache(True)
    assert sg.node.kernel_write_cache() == "write back"  # the kernel agrees with the disk
    assert write_and_fsync(sg.disk) >= 1

    sg.node.set_write_cache(False)
    assert sg.node.kernel_write_cache() == "write through"
    assert write_and_fsync(sg.disk) == 0  # nothing volatile: the flush never reaches the disk

    sg.backend.pwrite(0, b"\x5a" * 4096)  # the rig's own writes and flush work either way
    sg.backend.flush()
    assert sg.backend.pread(0, 4096) == b"\x5a" * 4096
