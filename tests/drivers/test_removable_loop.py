"""A real loop device standing in as a drive with removable media (``LoopDrive`` and the
``removable_loop`` node): media swap with LOOP_CHANGE_FD, no medium, read-only media, and the
node API's media verbs, seen by the rig and by other file descriptors alike."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import rig
from rig.drivers.ffi.ioctls import ioctl
from rig.drivers.loop import LoopDevice
from rig.drivers.nodes.removable import DriveStatus
from rig.drivers.nodes.removable_loop_node import RemovableLoopNode
from rig.drivers.removable_loop import LoopDrive
from rig.errors import ConfigError

pytestmark = pytest.mark.rig_needs("loop")

MiB = 1024 * 1024


@pytest.fixture
def medium(tmp_path: Path) -> Callable[[str, int], str]:
    def make(fill: str, size: int = MiB) -> str:
        path = tmp_path / f"{fill}-{size}.img"
        path.write_bytes(fill.encode() * size)
        return str(path)

    return make


def _bound_to(dev: str) -> str:
    with open(f"/sys/block/{os.path.basename(dev)}/loop/backing_file") as f:
        return f.read().strip()


def _read_via_new_fd(dev: str, offset: int, n: int) -> bytes:
    fd = os.open(dev, os.O_RDONLY)
    try:
        return os.pread(fd, n, offset)
    finally:
        os.close(fd)


def test_drive_swaps_media_and_every_fd_sees_it(medium: Callable[[str, int], str]) -> None:
    a, b, c = medium("A", MiB), medium("B", MiB), medium("C", 3 * MiB)
    with LoopDrive(a) as drive:
        held = os.open(drive.path, os.O_RDONLY)  # a program that already read (and cached) A
        try:
            assert os.pread(held, 4096, 0) == b"A" * 4096
            seq = drive.diskseq()
            drive.insert(b)  # same size: one LOOP_CHANGE_FD
            # The sequence comes from one counter for every disk of the system: other
            # workers' loop devices move it too, so only "it moved" can be asserted.
            after_b = drive.diskseq()
            assert after_b > seq
            assert os.pread(held, 4, 0) == b"BBBB"  # the kernel dropped A's cached pages
            assert _bound_to(drive.path) == b
            drive.insert(c)  # another size: through the closed window
            assert drive.size() == 3 * MiB
            assert os.pread(held, 4, 3 * MiB - 4) == b"CCCC"
            assert drive.diskseq() > after_b
        finally:
            os.close(held)


def test_no_medium_is_size_zero_and_releases_the_image(
        medium: Callable[[str, int], str]) -> None:
    a = medium("A", MiB)
    with LoopDrive(a) as drive:
        drive.remove()
        assert drive.size() == 0 and drive.medium is None and drive.tray_open
        assert _read_via_new_fd(drive.path, 0, 512) == b""  # end of an empty device
        assert _bound_to(drive.path).startswith("/") and _bound_to(drive.path) != a
        assert "blockrig-no-medium-" in _bound_to(drive.path)
        drive.insert(a)
        assert _read_via_new_fd(drive.path, 0, 4) == b"AAAA"


def test_empty_drive_then_medium_and_an_outside_program_reads_it(
        medium: Callable[[str, int], str]) -> None:
    a = medium("A", 2 * MiB)
    with LoopDrive() as drive:
        assert drive.size() == 0
        drive.insert(a)
        out = subprocess.run(["dd", f"if={drive.path}", "bs=4096", "count=1", "status=none"],
                             capture_output=True, check=True).stdout
        assert out == b"A" * 4096


def test_media_are_read_only(medium: Callable[[str, int], str]) -> None:
    with LoopDrive(medium("A", MiB)) as drive:
        with open(f"/sys/block/{os.path.basename(drive.path)}/ro") as f:
            assert f.read().strip() == "1"
        fd = os.open(drive.path, os.O_RDWR)
        try:
            with pytest.raises(OSError) as e:
                os.pwrite(fd, b"x" * 512, 0)
            assert e.value.errno == errno.EPERM
        finally:
            os.close(fd)


def test_kernel_refuses_change_fd_on_a_writable_loop(medium: Callable[[str, int], str]) -> None:
    """Why the drive is read-only: LOOP_CHANGE_FD is EINVAL on a writable loop device."""
    a, b = medium("A", MiB), medium("B", MiB)
    with LoopDevice.attach(a) as dev:
        fd = os.open(b, os.O_RDONLY)
        try:
            with pytest.raises(OSError) as e:
                ioctl(dev.fileno(), "LOOP_CHANGE_FD", fd)
            assert e.value.errno == errno.EINVAL
        finally:
            os.close(fd)


def test_bad_media_are_refused(medium: Callable[[str, int], str], tmp_path: Path) -> None:
    odd = tmp_path / "odd.img"
    odd.write_bytes(b"x" * 1000)
    with LoopDrive() as drive:
        with pytest.raises(ConfigError, match="not a positive multiple of 512"):
            drive.insert(str(odd))
        with pytest.raises(ConfigError, match="No such file"):
            drive.insert(str(tmp_path / "missing.img"))
        assert drive.size() == 0 and drive.medium is None


def _released(dev: str, medium: str | None = None) -> bool:
    """``dev`` is unbound, or bound by someone else since (parallel tests attach loops too)."""
    try:
        bound = _bound_to(dev)
    except FileNotFoundError:
        return True
    return "blockrig-no-medium-" not in bound and bound != medium


def test_drive_leaves_nothing_behind(medium: Callable[[str, int], str]) -> None:
    a = medium("A", MiB)
    drive = LoopDrive(a)
    path = drive.path
    drive.close()
    drive.close()
    assert _released(path, a)
    with pytest.raises(ConfigError):
        LoopDrive(str(Path("/nonexistent/medium.img")))


# ---------------------------------------------------------------------- the node
def test_node_media_verbs(medium: Callable[[str, int], str]) -> None:
    a, b, c = medium("A", MiB), medium("B", MiB), medium("C", 2 * MiB)
    with rig.open({"driver": "removable_loop", "filename": a}, read_only=True,
                  cache="none") as blk:
        node = blk.root
        assert isinstance(node, RemovableLoopNode)
        assert blk.is_inserted() and not blk.media_changed()
        assert node.drive_status() is DriveStatus.DISC_OK
        assert blk.pread(0, 512) == b"A" * 512

        node.change_medium(b)
        assert blk.media_changed() and not blk.media_changed()  # reported once
        assert blk.pread(MiB - 512, 512) == b"B" * 512

        blk.lock_medium(True)
        with pytest.raises(OSError) as e:
            blk.eject()
        assert e.value.errno == errno.EBUSY and blk.is_inserted()
        blk.eject(force=True)  # unlocks, then opens the tray
        assert not node.medium_locked
        assert node.drive_status() is DriveStatus.TRAY_OPEN and not blk.is_inserted()
        blk.refresh_length()
        with pytest.raises(OSError) as e:
            blk.pread(0, 512)
        assert e.value.errno == errno.ENOMEDIUM
        assert blk.media_changed()

        blk.eject(False)  # close the tray, still empty
        assert node.drive_status() is DriveStatus.NO_DISC

        node.insert_medium(c)
        assert blk.refresh_length() == 2 * MiB and blk.media_changed()
        assert blk.pread(2 * MiB - 512, 512) == b"C" * 512


def test_node_sees_a_change_made_by_someone_else(medium: Callable[[str, int], str]) -> None:
    """media_changed() follows the kernel's disk sequence number, not the node's own calls."""
    a, b = medium("A", MiB), medium("B", MiB)
    with rig.open({"driver": "removable_loop", "filename": a}, read_only=True) as blk:
        drive = blk.root.drive  # type: ignore[attr-defined]
        fd = os.open(b, os.O_RDONLY)
        other = os.open(drive.path, os.O_RDONLY)  # another process would do this
        try:
            ioctl(other, "LOOP_CHANGE_FD", fd)
        finally:
            os.close(fd)
            os.close(other)
        assert blk.media_changed()
        assert blk.pread(0, 4) == b"BBBB"


def test_node_refuses_writable_open_and_starts_empty(medium: Callable[[str, int], str]) -> None:
    with pytest.raises(ConfigError, match="read-only"):
        rig.open({"driver": "removable_loop", "filename": medium("A", MiB)})
    with rig.open({"driver": "removable_loop"}, read_only=True) as blk:
        assert not blk.is_inserted() and blk.getlength() == 0
        with pytest.raises(OSError) as e:
            blk.pread(0, 512)
        assert e.value.errno == errno.ENOMEDIUM
        path = blk.root.drive.path  # type: ignore[attr-defined]
    assert _released(path)


def test_fixed_media_nodes_keep_the_defaults(tmp_path: Path) -> None:
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(MiB))
    with rig.open({"driver": "file", "filename": str(img)}) as blk:
        assert blk.is_inserted() and not blk.media_changed()
        blk.lock_medium(True)  # nothing to lock: accepted, as in QEMU
        with pytest.raises(OSError) as e:
            blk.eject()
        assert e.value.errno == errno.ENOTSUP
