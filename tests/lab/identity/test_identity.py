"""Identity on this host: the normal forms, the udev record as the identity reads it, garbage for
every parser, and the sysfs fallback on real loop devices (no udevd runs here; where one does,
the fallback tests skip). The positive matches against real udev data run in the VM lab's guest
(``test_identity_vm.py``)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from rig.drivers import identity as ids
from rig.drivers.identity import UdevRecord, from_udev
from rig.drivers.lab import Lab, parse_inventory
from rig.drivers.lab import inventory as inventory_module
from rig.drivers.safety import AllowList
from rig.drivers.udev import settle, udevd_running
from rig.errors import ConfigError, DeviceNotFoundError, RigError, UnsafeDeviceError
from tests.fuzzing import fuzz, one_line

MiB = 1 << 20

#: What udev's database held for the VM lab guest's disk 0 (``udevadm info /dev/sda``, QEMU
#: scsi-hd with serial=rig-disk0,wwn=0x5000c50015ea71a0): with a WWN, udev makes ID_SERIAL
#: from it and the VPD serial becomes ID_SCSI_SERIAL.
GUEST_SDA = {
    "DEVNAME": "/dev/sda", "DEVTYPE": "disk", "ID_BUS": "scsi", "ID_MODEL": "QEMU_HARDDISK",
    "ID_PATH": "pci-0000:00:03.0-scsi-0:0:0:0", "ID_SCSI_SERIAL": "rig-disk0",
    "ID_SERIAL": "35000c50015ea71a0", "ID_SERIAL_SHORT": "5000c50015ea71a0",
    "ID_WWN": "0x5000c50015ea71a0", "ID_WWN_WITH_EXTENSION": "0x5000c50015ea71a0",
    "DEVLINKS": "/dev/disk/by-path/pci-0000:00:03.0-scsi-0:0:0:0 /dev/disk/by-diskseq/1 "
                "/dev/disk/by-id/wwn-0x5000c50015ea71a0 /dev/disk/by-id/scsi-35000c50015ea71a0",
}


def record(props: dict[str, str]) -> UdevRecord:
    return UdevRecord(props, ids.parse_devlinks(props.get("DEVLINKS", "")))


# -- normal forms ----------------------------------------------------------------------------


@pytest.mark.parametrize(("spellings", "normal"), [
    (["0x5000C50015EA71A0", "naa.5000c50015ea71a0", "wwn-0x5000c50015ea71a0",
      "/dev/disk/by-id/wwn-0x5000c50015ea71a0", " 5000c50015ea71a0 "], "5000c50015ea71a0"),
    (["eui.0025388B71B2D1E5", "nvme-eui.0025388b71b2d1e5",
      "/dev/disk/by-id/nvme-eui.0025388b71b2d1e5"], "eui.0025388b71b2d1e5"),
    (["nvme.8086-43564654-494e54454c-00000001", "nvme-nvme.8086-43564654-494e54454c-00000001"],
     "nvme.8086-43564654-494e54454c-00000001"),
    (["0x600a0b800029b3d40000a1b2c3d4e5f6", "naa.600A0B800029B3D40000A1B2C3D4E5F6"],
     "600a0b800029b3d40000a1b2c3d4e5f6"),
])
def test_wwn_spellings_share_a_normal_form(spellings: list[str], normal: str) -> None:
    for text in spellings:
        assert ids.norm_wwn(text) == normal, text
        assert ids.wwn_problem(text) is None, text


def test_an_nvme_eui_is_not_an_naa_name() -> None:
    ident = ids.DeviceIdentity("nvme0n1", (259, 0), "/sys/block/nvme0n1",
                               wwn="eui.0025388b71b2d1e5")
    assert ident.has_wwn("eui.0025388B71B2D1E5") and not ident.has_wwn("0x0025388b71b2d1e5")


@pytest.mark.parametrize("text", ["0x5", "5000c50015ea71a", "0x5000c50015ea71ag", "eui.12",
                                  "eui.0025388b71b2d1e5zz", "nvme.", "uuid.x y", "t10.", ""])
def test_what_is_not_a_wwn(text: str) -> None:
    assert ids.wwn_problem(text) is not None


def test_models_and_serials_compare_across_spellings() -> None:
    assert ids.norm_model("QEMU_HARDDISK") == ids.norm_model("QEMU HARDDISK   ") == "qemu harddisk"
    assert ids.norm_serial(" Z1D0ABC ") == ids.norm_serial("z1d0abc")


# -- the udev record -------------------------------------------------------------------------


def test_a_scsi_disk_as_udev_presents_it() -> None:
    ident = from_udev("sda", (8, 0), "/sys/block/sda", record(GUEST_SDA),
                      "rig-disk0", "naa.5000c50015ea71a0", "QEMU HARDDISK   ")
    assert (ident.source, ident.serial, ident.wwn) == ("udev", "rig-disk0", "0x5000c50015ea71a0")
    for serial in ("rig-disk0", "5000c50015ea71a0", "35000c50015ea71a0"):
        assert ident.has_serial(serial)
    assert ident.has_wwn("naa.5000c50015ea71a0") and ident.has_model("qemu harddisk")
    assert ident.by_id == ("scsi-35000c50015ea71a0", "wwn-0x5000c50015ea71a0")
    assert ident.by_path == "pci-0000:00:03.0-scsi-0:0:0:0"
    assert AllowList.from_entries(["serial:RIG-DISK0"]).allows(ident)


def test_a_usb_bridge_serial_as_udev_presents_it() -> None:
    """A disk behind a USB bridge (the shape of udev's usb_id output): ID_SERIAL_SHORT is the
    bridge's serial, ID_SCSI_SERIAL (when the bridge passes VPD 0x80 on) the disk's own."""
    ident = from_udev("sdb", (8, 16), "/sys/block/sdb", record({
        "ID_BUS": "usb", "ID_MODEL": "Generic", "ID_SERIAL": "JMicron_Generic_0123456789AB-0:0",
        "ID_SERIAL_SHORT": "0123456789AB", "ID_SCSI_SERIAL": "WD-WX11A12345",
        "ID_PATH": "pci-0000:00:14.0-usb-0:2:1.0-scsi-0:0:0:0"}), None, None, None)
    for serial in ("0123456789ab", "JMicron_Generic_0123456789AB-0:0", "WD-WX11A12345"):
        assert ident.has_serial(serial)
    assert ident.wwn is None and not ident.has_wwn("0x5000c50015ea71a0")


def test_an_nvme_disk_as_udev_presents_it() -> None:
    ident = from_udev("nvme0n1", (259, 0), "/sys/block/nvme0n1", record({
        "ID_WWN": "eui.0025388b71b2d1e5", "ID_SERIAL_SHORT": "S4EWNX0N123456",
        "ID_SERIAL": "Samsung_SSD_970_EVO_1TB_S4EWNX0N123456", "ID_PATH": "pci-0000:01:00.0-nvme-1",
        "DEVLINKS": "/dev/disk/by-id/nvme-eui.0025388b71b2d1e5"}), None, "eui.0025388b71b2d1e5",
        None)
    assert ident.has_wwn("nvme-eui.0025388b71b2d1e5") and ident.has_serial("s4ewnx0n123456")
    assert ident.by_id == ("nvme-eui.0025388b71b2d1e5",)


# -- garbage for every parser ----------------------------------------------------------------

texts = st.text(max_size=80)
hostile = st.one_of(texts, st.integers(), st.booleans(), st.lists(texts, max_size=3),
                    st.floats(allow_nan=True), st.sampled_from(["0x" + "5" * 16, "eui." + "0" * 16,
                                                                "/dev/disk/by-id/x", "a\nb"]))


@given(texts)
@fuzz
@pytest.mark.fuzz
def test_fuzz_identity_text_parsers(text: str) -> None:
    ids.norm_serial(text)
    ids.norm_model(text)
    ids.norm_by_id(text)
    ids.norm_by_path(text)
    problem = ids.wwn_problem(text)
    assert problem is None or "\n" not in problem
    assert all(link.startswith("/dev/") for link in ids.parse_devlinks(text))
    if problem is None:  # a WWN matches itself in every spelling
        ident = ids.DeviceIdentity("sdx", (8, 0), "/sys/block/sdx", wwn=text)
        assert ident.has_wwn(ids.norm_wwn(text)) and ident.has_wwn(text.upper())


@given(st.binary(max_size=300))
@fuzz
@pytest.mark.fuzz
def test_fuzz_vpd_serial(page: bytes) -> None:
    serial = ids.parse_vpd_serial(page)
    assert serial is None or (serial and serial.isprintable())


@given(st.dictionaries(st.sampled_from(sorted(GUEST_SDA)),
                       texts, max_size=8), texts)
@fuzz
@pytest.mark.fuzz
def test_fuzz_udev_properties(props: dict[str, str], probe: str) -> None:
    ident = from_udev("sdx", (8, 0), "/sys/block/sdx", record(props), None, None, None)
    for check in (ident.has_serial, ident.has_wwn, ident.has_model):
        check(probe)
    assert all("/" not in name for name in ident.by_id)
    if props.get("ID_WWN", "").strip():
        assert ident.has_wwn(props["ID_WWN"])


@given(st.sampled_from(["wwn", "serial", "by_id", "by_path", "model", "path"]), hostile)
@fuzz
@pytest.mark.fuzz
def test_fuzz_inventory_identity_keys(key: str, value: Any) -> None:
    """One [[disk]] table as TOML gives it (any value type) through the entry parser."""
    try:
        disk = inventory_module._disk("lab.toml", 0, {"name": "a", key: value})
    except RigError as e:
        one_line(e)
        assert str(e).startswith("lab.toml: disk 'a': ")
        return
    assume(getattr(disk, key))
    assert isinstance(value, str) and str(getattr(disk, key)).isprintable()


# -- the sysfs fallback, on real loop devices --------------------------------------------------


@pytest.fixture
def no_udev_database() -> None:
    if ids.udev_database():
        pytest.skip(f"a udev database exists here ({ids.UDEV_DATA}): the fallback is not used")


def lab_of(tmp_path: Path, body: str) -> Lab:
    path = tmp_path / "lab.toml"
    path.write_text(f'lease_dir = "{tmp_path / "leases"}"\n{body}')
    from rig.drivers.lab import load_inventory

    return Lab(load_inventory(path), allow_destructive=True)


@contextlib.contextmanager
def by_id_link(name: str, target: str) -> Iterator[str]:
    """A /dev/disk/by-id link made by hand (what udev would make), removed afterwards with
    any directory this made."""
    made = [d for d in ("/dev/disk", "/dev/disk/by-id") if not os.path.isdir(d)]
    for d in made:
        os.mkdir(d)
    link = f"/dev/disk/by-id/{name}"
    os.symlink(target, link)
    try:
        yield link
    finally:
        os.unlink(link)
        for d in reversed(made):
            os.rmdir(d)


@pytest.mark.rig_needs("loop")
class TestSysfsFallback:
    def test_a_loop_device_is_read_from_sysfs(self, no_udev_database: None,
                                              rig_loop: Callable[..., Any]) -> None:
        dev = rig_loop(4 * MiB)
        st_ = os.stat(dev.path)
        ident = ids.identity_by_number((os.major(st_.st_rdev), os.minor(st_.st_rdev)))
        assert (ident.source, ident.by_id, ident.by_path) == ("sysfs", (), None)
        assert (ident.serial, ident.wwn) == (None, None)  # a loop device has neither

    def test_by_id_and_by_path_say_there_is_no_database(
            self, no_udev_database: None, tmp_path: Path,
            rig_loop: Callable[..., Any]) -> None:
        dev = rig_loop(4 * MiB)
        with pytest.raises(DeviceNotFoundError) as exc:
            lab_of(tmp_path, '[[disk]]\nname = "a"\nby_id = "wwn-0x5000c50015ea71a0"\n'
                   ).acquire(name="a", destructive=False)
        assert str(exc.value) == ("lab disk 'a': no device with by_id wwn-0x5000c50015ea71a0 "
                                  f"is present; {ids.FALLBACK_NOTE}")
        before = Path(dev.backing_file).read_bytes()
        lab = lab_of(tmp_path, f'[[disk]]\nname = "a"\npath = "{dev.path}"\n'
                     'by_path = "pci-0000:00:1f.2-ata-1"\ndestructive = true\n')
        with pytest.raises(UnsafeDeviceError) as exc2, lab.acquire(name="a") as got, \
                got.open() as blk:
            blk.pwrite(0, b"\xee" * 4096, fua=True)
        assert str(exc2.value) == (
            f"lab disk 'a': by_path: expected pci-0000:00:1f.2-ata-1, found unknown "
            f"({ids.FALLBACK_NOTE}) at {dev.path} (disks renumber: check which disk this is "
            "and fix the inventory)")
        assert Path(dev.backing_file).read_bytes() == before

    def test_an_existing_by_id_link_is_followed(self, no_udev_database: None, tmp_path: Path,
                                                rig_loop: Callable[..., Any]) -> None:
        dev = rig_loop(4 * MiB)
        name = f"rig-test-{os.getpid()}-{dev.index}"
        with by_id_link(name, dev.path):
            lab = lab_of(tmp_path, f'[[disk]]\nname = "a"\nby_id = "{name}"\n')
            with lab.acquire(name="a", destructive=False) as got:
                assert got.path == dev.path

    def test_settle_without_udevd_returns_at_once(self) -> None:
        if udevd_running():
            pytest.skip("a udevd runs here: settling waits for it")
        t0 = time.monotonic()
        settle("nothing", timeout=5)
        assert time.monotonic() - t0 < 1.0


def test_parse_keeps_the_names_without_their_directory() -> None:
    inv = parse_inventory('[[disk]]\nname = "a"\nby_id = "/dev/disk/by-id/wwn-0x5000c50015ea71a0"\n'
                          'by_path = "/dev/disk/by-path/pci-0000:00:03.0-scsi-0:0:0:0"\n'
                          'model = "QEMU HARDDISK"\n', "lab.toml")
    (disk,) = inv.disks
    assert (disk.by_id, disk.by_path, disk.model) == (
        "wwn-0x5000c50015ea71a0", "pci-0000:00:03.0-scsi-0:0:0:0", "QEMU HARDDISK")
    with pytest.raises(ConfigError, match="by_path must be a name in /dev/disk/by-path/"):
        parse_inventory('[[disk]]\nname = "a"\nby_path = "/dev/sda"\n', "lab.toml")
