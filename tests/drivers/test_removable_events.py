"""Block uevents through pyudev on the host: a real loop device standing in as a removable
drive sends change events with DISK_MEDIA_CHANGE when its medium is swapped, add and remove
when a loop device is created and deleted, and wait_until_ready wakes up when a medium arrives.
Without udevd these are the kernel's own uevents; the udev-processed ones need a udevd."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from pathlib import Path

import pytest

from rig.drivers.ffi.ioctls import ioctl
from rig.drivers.removable_loop import LoopDrive
from rig.drivers.udev import BlockEvents, udevd_running, wait_until_ready

pytestmark = pytest.mark.rig_needs("loop")

MiB = 1024 * 1024


def _image(tmp_path: Path, fill: bytes, size: int = MiB) -> str:
    path = tmp_path / f"{fill.decode()}.img"
    path.write_bytes(fill * size)
    return str(path)


def test_medium_swap_sends_a_media_change_event(tmp_path: Path) -> None:
    a, b = _image(tmp_path, b"A"), _image(tmp_path, b"B")
    with LoopDrive(a) as drive, BlockEvents([drive.path], source="kernel") as events:
        drive.insert(b)
        event = events.wait_for(lambda e: e.media_change, timeout=10)
        assert event.action == "change" and event.devname == drive.path
        assert event.diskseq == drive.diskseq()


def test_events_of_other_devices_are_filtered_out(tmp_path: Path) -> None:
    a, b = _image(tmp_path, b"A"), _image(tmp_path, b"B")
    with LoopDrive(a) as mine, LoopDrive(a) as other, \
            BlockEvents([mine.path], source="kernel") as events:
        other.insert(b)
        assert events.poll(0.5) is None
        mine.insert(b)
        assert events.wait_for(lambda e: True, timeout=10).devname == mine.path


def _free_loop_index() -> int:
    index = 900 + os.getpid() % 50
    while os.path.exists(f"/sys/block/loop{index}"):
        index += 1
    return index


def test_loop_device_add_and_remove_events() -> None:
    ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        with BlockEvents(source="kernel") as events:
            for _ in range(20):
                index = _free_loop_index()
                try:
                    ioctl(ctl, "LOOP_CTL_ADD", index)
                    break
                except OSError as e:
                    if e.errno != errno.EEXIST:
                        raise
            path = f"/dev/loop{index}"
            try:
                added = events.wait_for(lambda e: e.devname == path, timeout=10)
                assert added.action == "add"
            finally:
                with contextlib.suppress(OSError):
                    ioctl(ctl, "LOOP_CTL_REMOVE", index)
            removed = events.wait_for(lambda e: e.devname == path and e.action == "remove",
                                      timeout=10)
            assert removed.action == "remove"
    finally:
        os.close(ctl)
    assert not os.path.exists(f"/sys/block/loop{index}")


def test_wait_until_ready_wakes_on_the_medium(tmp_path: Path) -> None:
    a = _image(tmp_path, b"A", 2 * MiB)
    with LoopDrive() as drive:
        timer = threading.Timer(0.3, drive.insert, [a])
        t0 = time.monotonic()
        timer.start()
        try:
            assert wait_until_ready(drive.path, timeout=10) == 2 * MiB
        finally:
            timer.join()
        assert time.monotonic() - t0 >= 0.3


def test_wait_until_ready_times_out_without_a_medium() -> None:
    with LoopDrive() as drive, pytest.raises(TimeoutError, match="no medium"):
        wait_until_ready(drive.path, timeout=0.5, poll_interval=0.1)


@pytest.mark.rig_needs("udev")  # runs in the VM lab's guest (pytest --rig-vm) where none runs
def test_udev_processed_change_event(tmp_path: Path) -> None:
    assert udevd_running()
    a, b = _image(tmp_path, b"A"), _image(tmp_path, b"B")
    with LoopDrive(a) as drive, BlockEvents([drive.path], source="udev") as events:
        drive.insert(b)
        event = events.wait_for(lambda e: e.action == "change", timeout=10)
        assert event.devname == drive.path
