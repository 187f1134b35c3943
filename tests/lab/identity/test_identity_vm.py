"""Disks found by who they are, through udev, in the VM lab's guest (``pytest --rig-vm``).

The guest's two SCSI disks have a serial and a WWN from QEMU (``serial=rig-diskN``,
``wwn=0x5000c50015ea71aN``) and a running systemd-udevd filled the udev database, so the lab
reads ID_WWN, ID_SCSI_SERIAL, ID_PATH and the /dev/disk links as on a real lab host. Disk 0 is
the scratch disk (``vm-scratch`` in the guest's inventory), disk 1 the one tests must leave alone
(``vm-other``). Every refusal is tried with a write behind it, and the disks' bytes are compared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rig.cli import devices_cmd
from rig.drivers.identity import identity_by_number
from rig.drivers.lab import Lab, load_inventory, resolve
from rig.drivers.lab.labdisk import LabDisk
from rig.drivers.safety import AllowList, block_number
from rig.drivers.udev import settle
from rig.drivers.vm.qemu import disk_serial, disk_wwn
from rig.errors import RigError, UnsafeDeviceError

pytestmark = pytest.mark.rig_needs("udev", "root")

MiB = 1 << 20


@pytest.fixture
def disks() -> list[str]:
    """The guest's disks, in QEMU's order."""
    found = os.environ.get("RIG_VM_DISKS", "").split()
    if len(found) < 2:
        pytest.skip("needs the VM lab guest's two disks ($RIG_VM_DISKS): run with pytest --rig-vm")
    return found


def by_path_name(dev: str) -> str:
    """The /dev/disk/by-path name udev made for ``dev`` (read from the links themselves)."""
    names = [n for n in os.listdir("/dev/disk/by-path")
             if os.path.realpath(f"/dev/disk/by-path/{n}") == dev]
    assert len(names) == 1, names
    return names[0]


def digest(dev: str) -> str:
    """The first MiB, where a wrongly allowed write would land."""
    with open(dev, "rb") as f:
        return hashlib.sha256(f.read(MiB)).hexdigest()


def lab_of(tmp_path: Path, body: str) -> Lab:
    path = tmp_path / "lab.toml"
    path.write_text(f'lease_dir = "{tmp_path / "leases"}"\n' + textwrap.dedent(body))
    return Lab(load_inventory(path), allow_destructive=True)


def entry(key: str, value: str, path: str | None = None) -> str:
    where = f'path = "{path}"\n' if path else ""
    return f'[[disk]]\nname = "d"\n{where}{key} = "{value}"\ndestructive = true\n'


def test_udev_names_the_disks(disks: list[str]) -> None:
    for i, dev in enumerate(disks[:2]):
        number = block_number(dev)
        assert number is not None
        ident = identity_by_number(number)
        assert ident.source == "udev"
        assert ident.has_wwn(disk_wwn(i)) and ident.has_wwn(f"naa.{disk_wwn(i)[2:].upper()}")
        assert ident.has_serial(disk_serial(i)) and ident.serial == disk_serial(i)
        assert f"wwn-{disk_wwn(i)}" in ident.by_id
        assert ident.by_path == by_path_name(dev)
        assert ident.by_path.endswith(f"-scsi-0:0:{i}:0")
        assert ident.has_model("QEMU HARDDISK")
        assert not ident.has_wwn(disk_wwn(1 - i)) and not ident.has_serial(disk_serial(1 - i))
        assert AllowList.from_entries([f"wwn:{disk_wwn(i)}"]).allows(ident)
        assert AllowList.from_entries([f"serial:{disk_serial(i)}"]).allows(ident)


@pytest.mark.parametrize("key", ["wwn", "serial", "by_id", "by_path"])
def test_an_inventory_finds_each_disk_by(tmp_path: Path, disks: list[str], key: str) -> None:
    for i, dev in enumerate(disks[:2]):
        value = {"wwn": disk_wwn(i), "serial": disk_serial(i), "by_id": f"wwn-{disk_wwn(i)}",
                 "by_path": by_path_name(dev)}[key]
        lab = lab_of(tmp_path, entry(key, value))
        assert resolve(lab.inventory.entry("d")).path == dev
        # the same value with the entry's path agrees; the full by-id/by-path path works too
        if key in ("by_id", "by_path"):
            value = f"/dev/disk/{key.replace('_', '-')}/{value}"
        got = resolve(lab_of(tmp_path, entry(key, value, dev)).inventory.entry("d"))
        assert (got.path, got.lease_key) == (dev, f"wwn-{disk_wwn(i)[2:]}")


def test_a_model_alone_is_not_an_identity_here(tmp_path: Path, disks: list[str]) -> None:
    lab = lab_of(tmp_path, entry("model", "QEMU_HARDDISK"))
    first, second = sorted(disks[:2])  # sd probing is asynchronous: sda may be disk 1
    with pytest.raises(UnsafeDeviceError, match=rf"matches {first}, {second}; make the "):
        lab.acquire(name="d")


@pytest.mark.parametrize("key", ["wwn", "serial", "by_id", "by_path"])
def test_swapped_disks_are_refused_before_any_write(tmp_path: Path, disks: list[str],
                                                    key: str) -> None:
    """The inventory was written when disk 1 was at disk 0's path (disks renumber between
    boots): the entry's path now leads to the other disk."""
    here, other = disks[0], disks[1]
    expected = {"wwn": disk_wwn(1), "serial": disk_serial(1), "by_id": f"wwn-{disk_wwn(1)}",
                "by_path": by_path_name(other)}[key]
    found = {"wwn": disk_wwn(0), "serial": disk_serial(0),
             "by_id": ", ".join(identity_by_number(block_number(here) or (0, 0)).by_id),
             "by_path": by_path_name(here)}[key]
    before = digest(here), digest(other)
    lab = lab_of(tmp_path, entry(key, expected, here))
    with pytest.raises(UnsafeDeviceError) as exc, lab.acquire(name="d") as got, \
            got.open() as blk:
        blk.pwrite(0, b"\xee" * 4096, fua=True)  # reached only if the gate let it through
    assert str(exc.value) == (f"lab disk 'd': {key}: expected {expected}, found {found} at "
                              f"{here} (disks renumber: check which disk this is and fix the "
                              "inventory)")
    assert (digest(here), digest(other)) == before


@pytest.mark.rig_needs("lab_disk")
def test_a_test_writes_only_the_disk_it_was_given(rig_lab_disk: Callable[..., LabDisk],
                                                  rig_lab: Lab, disks: list[str]) -> None:
    before = digest(disks[1])
    disk = rig_lab_disk()
    assert (disk.entry.name, disk.path) == ("vm-scratch", disks[0])  # found by its WWN
    pattern = os.urandom(MiB)
    with disk.open() as blk:
        blk.pwrite(0, pattern, fua=True)
        assert blk.pread(0, MiB) == pattern
    with pytest.raises(UnsafeDeviceError, match="'vm-other' is not marked destructive"):
        rig_lab.acquire(name="vm-other")
    assert digest(disks[1]) == before


def test_settle_names_the_device_and_the_timeout() -> None:
    settle("the disks", timeout=20)  # the queue is empty: at once
    subprocess.run(["udevadm", "control", "--stop-exec-queue"], check=True)
    try:
        with pytest.raises(RigError) as exc:  # the change event it sends waits in the queue
            settle("lab disk 'x' (/dev/sda)", timeout=1, changed="/dev/sda")
        assert str(exc.value) == ("lab disk 'x' (/dev/sda): udev did not settle within 1 s "
                                  "(its event queue is stuck: look at 'udevadm monitor' and the "
                                  "udevd log)")
    finally:
        subprocess.run(["udevadm", "control", "--start-exec-queue"], check=True)
    settle("the disks", timeout=20)


@pytest.mark.rig_needs("lab_disk")
def test_rig_devices_shows_identity_and_lab_entry(request: pytest.FixtureRequest,
                                                  capsys: pytest.CaptureFixture[str],
                                                  disks: list[str]) -> None:
    args = argparse.Namespace(json=True, all=False, allow=[],
                                          lab=request.config.getoption("rig_lab"))
    assert devices_cmd.run(args) == 0
    out = capsys.readouterr()
    assert "udev database" not in out.err  # no fallback note here
    rows: list[dict[str, Any]] = json.loads(out.out)
    for i, (dev, name) in enumerate(zip(disks, ["vm-scratch", "vm-other"], strict=False)):
        (row,) = [r for r in rows if r["path"] == dev]
        assert (row["wwn"], row["serial"], row["by_path"], row["lab_entry"]) == (
            disk_wwn(i), disk_serial(i), by_path_name(dev), name)
        assert f"wwn-{disk_wwn(i)}" in row["by_id"] and row["identity_source"] == "udev"
        assert row["model"] == "QEMU_HARDDISK" and row["lab_problem"] is None
