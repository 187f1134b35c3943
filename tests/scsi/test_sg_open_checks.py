"""The device checks the sg and host_device drivers share (drivers/safety.py's
stat_device_node and allow_option): each driver keeps its own message."""

from __future__ import annotations

from pathlib import Path

import pytest

import rig
from rig.drivers.safety import AllowList, allow_option
from rig.errors import ConfigError, DeviceNotFoundError


@pytest.mark.parametrize(("driver", "message"), [
    ("sg", "'sg' driver requires '{}' to be a SCSI generic or block device"),
    ("host_device", "'host_device' driver requires '{}' to be either a character or block "
                    "device"),
    ("host_cdrom", "'host_cdrom' driver requires '{}' to be either a character or block "
                   "device")])  # QEMU 7.2's words (qemu-iotests 226)
def test_a_regular_file_is_refused_with_the_drivers_message(tmp_path: Path, driver: str,
                                                            message: str) -> None:
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(4096))
    with pytest.raises(ConfigError) as e:
        rig.open({"driver": driver, "filename": str(img)}, read_only=True)
    assert str(e.value) == message.format(img)
    with pytest.raises(DeviceNotFoundError, match="No such file or directory"):
        rig.open({"driver": driver, "filename": str(tmp_path / "missing")}, read_only=True)


def test_allow_option() -> None:
    assert allow_option("") is None and allow_option(None) is None
    assert allow_option("/dev/sdb,serial:ABC") == AllowList.from_entries(["/dev/sdb",
                                                                          "serial:ABC"])
