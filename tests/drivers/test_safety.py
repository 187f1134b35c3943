"""The write guard, on real loop devices, mounts and swap (needs root and /dev/loop-control)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rig.drivers.loop import scratch_loop
from rig.drivers.safety import (
    AllowList,
    DeviceIdentity,
    check_writable,
    device_usage,
    writable_problem,
)
from rig.errors import ConfigError, UnsafeDeviceError

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _no_env_allow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AllowList.ENV, raising=False)


@contextlib.contextmanager
def foreign_loop(tmp_path: Path) -> Iterator[str]:
    """A loop device this process did not create: attached by ``losetup``, detached after."""
    if shutil.which("losetup") is None:
        pytest.skip("needs losetup (util-linux)")
    backing = tmp_path / "foreign.img"
    with open(backing, "wb") as f:
        f.truncate(4 * MiB)
    dev = subprocess.run(
        ["losetup", "-f", "--show", str(backing)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


@contextlib.contextmanager
def mounted_ext4(dev: str, mountpoint: Path) -> Iterator[str]:
    """``dev`` formatted ext4 and mounted on ``mountpoint``; unmounted after, even on failure."""
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("needs mkfs.ext4 (apt-get install e2fsprogs)")
    subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True, capture_output=True)
    mountpoint.mkdir()
    res = subprocess.run(["mount", dev, str(mountpoint)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount ext4 here: {res.stderr.strip()}")
    try:
        yield str(mountpoint)
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)


# -- AllowList -------------------------------------------------------------------------------


def test_allow_list_parsing() -> None:
    env = " serial:ABC123 , wwn:0x5000C500A1B2C3D4,,/dev/disk/by-path/pci-0:0:4.0,sdb, /dev/loop3"
    allow = AllowList.from_env({AllowList.ENV: env})
    assert allow.serials == {"abc123"}
    assert allow.wwns == {"5000c500a1b2c3d4"}
    assert allow.paths == {"/dev/disk/by-path/pci-0:0:4.0", "/dev/sdb", "/dev/loop3"}
    assert not AllowList.from_env({})
    assert AllowList.from_env({}).merged(["serial:x"]).serials == {"x"}
    assert allow.merged(AllowList(paths=frozenset({"/dev/sdc"}))).paths >= {"/dev/sdc", "/dev/sdb"}
    with pytest.raises(ConfigError, match="serial:"):
        AllowList.from_entries(["serial:"])


def test_allow_by_serial_and_wwn() -> None:
    disk = DeviceIdentity(
        "sdx", (8, 16), "/sys/block/sdx", serial="S3Z9NB0K", wwn="naa.5000c500a1b2c3d4"
    )
    part = DeviceIdentity("sdx1", (8, 17), "/sys/block/sdx/sdx1", disk=disk)
    assert AllowList.from_entries(["serial:s3z9nb0k"]).allows(disk)
    assert AllowList.from_entries(["wwn:0x5000C500A1B2C3D4"]).allows(disk)
    assert AllowList.from_entries(["wwn:wwn-0x5000c500a1b2c3d4"]).allows(disk)
    assert AllowList.from_entries(["wwn:5000c500a1b2c3d4"]).allows(part)  # via its disk
    assert not AllowList.from_entries(["serial:other"]).allows(part)


def test_regular_files_are_fine(tmp_path: Path) -> None:
    check_writable(str(tmp_path / "does-not-exist.img"))
    (tmp_path / "f.img").write_bytes(b"")
    check_writable(str(tmp_path / "f.img"))
    with pytest.raises(ConfigError):
        device_usage(str(tmp_path / "f.img"))


# -- real devices ----------------------------------------------------------------------------


@pytest.mark.rig_needs("loop")
class TestDevices:
    def test_own_loop_is_writable(self) -> None:
        with scratch_loop(4 * MiB) as dev:
            check_writable(dev.path)
            assert writable_problem(dev.path) is None
            usage = device_usage(dev.path)
            assert not usage.in_use and usage.name == f"loop{dev.index}"

    def test_foreign_device_refused_until_allowed(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        with foreign_loop(tmp_path) as dev:
            with pytest.raises(UnsafeDeviceError) as exc:
                check_writable(dev)
            msg = str(exc.value)
            assert msg == (
                f"refusing to write to {dev}: the rig did not create it "
                f"(allow it with --allow {dev} or RIG_ALLOW_DEVICES)"
            )
            check_writable(dev, AllowList.from_entries([dev]))
            check_writable(dev, AllowList.from_entries([os.path.basename(dev)]))
            link = tmp_path / "by-name"
            link.symlink_to(dev)
            check_writable(str(link), AllowList.from_entries([dev]))
            check_writable(dev, AllowList.from_entries([str(link)]))
            with pytest.raises(UnsafeDeviceError):
                check_writable(dev, AllowList.from_entries(["/dev/loop-nope", "serial:x"]))
            monkeypatch.setenv(AllowList.ENV, f"serial:x,{dev}")
            check_writable(dev)

    def test_mounted_refused_even_when_allowed(self, tmp_path: Path) -> None:
        with scratch_loop(64 * MiB) as dev, mounted_ext4(dev.path, tmp_path / "mnt point") as mnt:
            usage = device_usage(dev.path)
            assert usage.mountpoints == [mnt]
            assert usage.in_use
            for allow in (None, AllowList.from_entries([dev.path])):
                with pytest.raises(UnsafeDeviceError) as exc:
                    check_writable(dev.path, allow)
                assert str(exc.value) == (
                    f"refusing to write to {dev.path}: it is mounted at {mnt} (unmount it first)"
                )
        assert not os.path.ismount(tmp_path / "mnt point")

    def test_mounted_partition_blocks_its_disk(self, tmp_path: Path) -> None:
        if shutil.which("addpart") is None:
            pytest.skip("needs addpart (util-linux)")
        image = tmp_path / "parted.img"
        with open(image, "wb") as f:
            f.truncate(64 * MiB)
        dev = subprocess.run(
            ["losetup", "-f", "-P", "--show", str(image)],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        try:
            # BLKPG via addpart: works even on kernels built without partition table parsers.
            subprocess.run(["addpart", dev, "1", "2048", str(64 * MiB // 512 - 2048)], check=True)
            part = f"{dev}p1"
            for _ in range(100):
                if os.path.exists(part):
                    break
                time.sleep(0.02)
            else:
                pytest.skip(f"{part} did not appear (is devtmpfs mounted on /dev?)")
            allow_disk = AllowList.from_entries([dev])
            check_writable(part, allow_disk)  # allowed through its whole disk
            with pytest.raises(UnsafeDeviceError, match="did not create"):
                check_writable(part)
            with mounted_ext4(part, tmp_path / "mnt") as mnt:
                assert device_usage(dev).mountpoints == [mnt]
                with pytest.raises(UnsafeDeviceError) as exc:
                    check_writable(dev, allow_disk)
                assert str(exc.value) == (
                    f"refusing to write to {dev}: its partition {part} is mounted at {mnt} "
                    "(unmount it first)"
                )
                with pytest.raises(UnsafeDeviceError, match=f"{part}: it is mounted at"):
                    check_writable(part, allow_disk)
        finally:
            subprocess.run(["losetup", "-d", dev], check=False)

    def test_swap_refused(self) -> None:
        if shutil.which("swapon") is None or shutil.which("mkswap") is None:
            pytest.skip("needs mkswap and swapon (util-linux)")
        with scratch_loop(16 * MiB) as dev:
            subprocess.run(["mkswap", dev.path], check=True, capture_output=True)
            res = subprocess.run(["swapon", dev.path], capture_output=True, text=True)
            if res.returncode != 0:
                pytest.skip(f"swapon not permitted here: {res.stderr.strip()}")
            try:
                assert device_usage(dev.path).swaps == (f"loop{dev.index}",)
                with pytest.raises(UnsafeDeviceError, match=r"in use as swap \(run 'swapoff"):
                    check_writable(dev.path, AllowList.from_entries([dev.path]))
            finally:
                subprocess.run(["swapoff", dev.path], check=False)

    def test_exclusive_opener_refused(self) -> None:
        """An O_EXCL holder (a mount in another namespace, mkfs, a VM) also blocks writes."""
        with scratch_loop(4 * MiB) as dev:
            fd = os.open(dev.path, os.O_RDONLY | os.O_EXCL)
            try:
                with pytest.raises(UnsafeDeviceError, match="open exclusively"):
                    check_writable(dev.path)
            finally:
                os.close(fd)
            check_writable(dev.path)

    def test_root_filesystem_device_refused(self) -> None:
        res = subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE", "/"], capture_output=True, text=True
        )
        source = res.stdout.strip()
        if res.returncode != 0 or not source.startswith("/dev/") or not os.path.exists(source):
            pytest.skip("/ is not on a block device here")
        with pytest.raises(UnsafeDeviceError, match="mounted at /"):
            check_writable(source, AllowList.from_entries([source]))
