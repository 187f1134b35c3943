"""After the rig binds a loop device or swaps a medium, udev has handled the kernel's events
before the call returns (``rig.drivers.loop.settle_after_change``), so what is read next (the
udev database, /dev/disk links, a probe that might still hold the device) is the device as it
is now. Needs a running udevd: the VM lab's guest (``pytest --rig-vm``)."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from rig.drivers.loop import LoopDevice
from rig.drivers.removable_loop import LoopDrive

pytestmark = pytest.mark.rig_needs("udev", "root")


@pytest.fixture(autouse=True)
def loop_module() -> None:
    if not os.path.exists("/dev/loop-control"):
        subprocess.run(["modprobe", "loop"], check=True, capture_output=True)


def ext4_image(path: Path) -> str:
    """A small ext4 image with a fresh UUID (udev's blkid probe links it by-uuid)."""
    fs_uuid = str(uuid.uuid4())
    path.write_bytes(b"")
    os.truncate(path, 2 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-U", fs_uuid, str(path)], check=True,
                   capture_output=True)
    return fs_uuid


def by_uuid(fs_uuid: str) -> str | None:
    link = Path("/dev/disk/by-uuid") / fs_uuid
    return os.path.realpath(link) if link.exists() else None


def test_a_bound_loop_device_is_linked_by_udev_when_attach_returns(tmp_path: Path) -> None:
    for n in range(3):  # each time, not by luck
        fs_uuid = ext4_image(tmp_path / f"fs{n}.img")
        dev = LoopDevice.attach(str(tmp_path / f"fs{n}.img"))
        try:
            assert by_uuid(fs_uuid) == dev.path, f"{dev.path}: udev had not linked it yet"
        finally:
            dev.detach()


def test_a_swapped_medium_is_linked_by_udev_when_insert_returns(tmp_path: Path) -> None:
    first = ext4_image(tmp_path / "one.img")
    second = ext4_image(tmp_path / "two.img")
    with LoopDrive(str(tmp_path / "one.img")) as drive:
        assert by_uuid(first) == drive.path
        drive.insert(str(tmp_path / "two.img"))
        assert by_uuid(second) == drive.path, "udev had not seen the new medium yet"
