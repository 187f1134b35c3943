"""The foundation's host_device state machine on kernel devices: scsi_debug at 512 and 4096-byte
sectors, null_blk, and the VM lab's virtio-scsi disk (a lab disk named in the inventory)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from rig.core.cache import CACHE_MODES
from rig.drivers.lab.labdisk import LabDisk


def _block_size(path: str) -> int:
    with open(f"/sys/class/block/{os.path.basename(path)}/queue/logical_block_size") as f:
        return int(f.read())


@pytest.mark.rig_needs("scsi_debug")
@pytest.mark.parametrize("sector_size", [512, 4096])
def test_scsi_debug(rig_scsi_debug: Callable[..., str],
                    lockstep: Callable[[str, int], set[str]], sector_size: int) -> None:
    path = rig_scsi_debug(sector_size=sector_size, dev_size_mb=8)
    assert _block_size(path) == sector_size
    used = lockstep(path, sector_size)
    assert used and used <= set(CACHE_MODES)


@pytest.mark.rig_needs("null_blk")
def test_null_blk(rig_null_blk: Callable[..., str],
                  lockstep: Callable[[str, int], set[str]]) -> None:
    path = rig_null_blk(block_size=4096)
    assert _block_size(path) == 4096
    assert lockstep(path, 4096)


@pytest.mark.rig_needs("null_blk")
def test_a_buffer_half_in_the_next_page_reads_the_whole_block(
        rig_null_blk: Callable[..., str]) -> None:
    """null_blk (Linux 6.1, memory-backed, 4096-byte blocks) reads a block's last 512 bytes as
    zeroes through an O_DIRECT buffer at a page + 512, which the kernel accepts. With O_DIRECT
    host_device aligns buffers to a whole block, bouncing a caller's buffer that is not."""
    import mmap

    import rig

    path = rig_null_blk(block_size=4096)
    block = bytes(range(256)) * 16
    pages = mmap.mmap(-1, 3 * 4096)
    pages[:4096] = block
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    try:
        os.pwritev(fd, [memoryview(pages)[:4096]], 0)
        os.preadv(fd, [memoryview(pages)[4096 + 512:2 * 4096 + 512]], 0)
        kernel_ok = pages[4096 + 512:2 * 4096 + 512] == block
    finally:
        os.close(fd)
    spec = {"driver": "host_device", "filename": path, "x-allow": path}
    with rig.open(spec, cache="none") as blk:
        assert blk.limits.buffer_alignment == 4096
        pages[4096:] = bytes(2 * 4096)
        blk.preadv(0, [memoryview(pages)[4096 + 512:2 * 4096 + 512]])
        assert pages[4096 + 512:2 * 4096 + 512] == block, (
            f"read through a buffer at a page + 512 (the kernel's own read was "
            f"{'right' if kernel_ok else 'wrong'})")


@pytest.mark.rig_needs("sg", "lab_disk")  # the VM lab offers its SCSI disk as one
def test_lab_disk(rig_lab_disk: Callable[..., LabDisk],
                  lockstep: Callable[[str, int], set[str]]) -> None:
    disk = rig_lab_disk()
    assert lockstep(disk.path, _block_size(disk.path))


@pytest.mark.rig_needs("sg", "lab_disk")
def test_buffered_discard_never_reads_back_an_older_write(
        rig_lab_disk: Callable[..., LabDisk]) -> None:
    """The kernel drops a range's dirty page cache before BLKDISCARD; on a device that keeps
    discarded data (the VM lab's scsi-hd: QEMU ignores discards by default) reads would return
    the write before the last one. host_device writes the range back first."""
    import rig

    disk = rig_lab_disk()
    spec = {"driver": "host_device", "filename": disk.path, "x-allow": disk.path}
    with rig.open(spec, cache="none") as blk:
        blk.pwrite(0, b"\x11" * 65536)  # on the media
    with rig.open(spec, cache="writeback") as blk:
        blk.pwrite(0, b"\x22" * 65536)  # in the page cache only
        blk.discard(0, 65536)
        after = blk.pread(0, 65536)
    assert set(after) <= {0x00, 0x22}, f"read {sorted(set(after))}: an older write came back"
