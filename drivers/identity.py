"""Who a block device is: its WWN and serial (what the disk says), its udev ``ID_PATH`` (where it
hangs), its ``/dev/disk/by-id`` names and its model.

Read from the udev database through pyudev (``ID_WWN_WITH_EXTENSION``, ``ID_WWN``,
``ID_SERIAL``, ``ID_SERIAL_SHORT``, ``ID_SCSI_SERIAL``, ``ID_PATH``, ``ID_MODEL``, ``DEVLINKS``)
when this machine has one (``/run/udev/data``); else from sysfs alone (``serial``,
``device/vpd_pg80``, ``wwid``, ``device/wwid``, ``device/model``), which knows no ``ID_PATH``
and no by-id names. The sysfs values are read in both cases, so a serial or WWN the kernel
reports always counts.

Normal forms, for comparing spellings (:func:`norm_wwn`, :func:`norm_serial`,
:func:`norm_model`): a WWN is lowercased; an NAA name (SCSI, SAS, ATA: ``0x5000c500a1b2c3d4``,
``naa.5000C500A1B2C3D4``, ``wwn-0x5000c500a1b2c3d4``) becomes its bare hex digits
(``5000c500a1b2c3d4``); NVMe names keep their type (``eui.0025388b71b2d1e5``, ``nvme.8086-...``,
``uuid.…``), with a by-id ``nvme-``/``wwn-`` prefix dropped. A serial is stripped and
casefolded; a model also has ``_`` read as a space and runs of spaces collapsed.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DevNum = tuple[int, int]

#: Where udevd keeps its database (one file per device, ``b8:0``).
UDEV_DATA = "/run/udev/data"
BY_ID = "/dev/disk/by-id/"
BY_PATH = "/dev/disk/by-path/"


def udev_database() -> bool:
    """Whether this machine has a udev database (a udevd ran here)."""
    return os.path.isdir(UDEV_DATA)


FALLBACK_NOTE = (f"no udev database here ({UDEV_DATA} is missing: no udevd runs): device "
                 "identity is read from sysfs, which has no by-id names and no ID_PATH")

# --------------------------------------------------------------------------------------------
# Normal forms
# --------------------------------------------------------------------------------------------

_HEX = re.compile(r"[0-9a-f]+")
_TYPED = ("eui.", "nvme.", "uuid.", "t10.")


def norm_serial(serial: str) -> str:
    """Compare serials across spellings (padding, case)."""
    return serial.strip().casefold()


def norm_model(model: str) -> str:
    """Compare models across spellings: udev's ``QEMU_HARDDISK``, sysfs ``QEMU HARDDISK   ``."""
    return " ".join(model.replace("_", " ").split()).casefold()


def norm_wwn(wwn: str) -> str:
    """A WWN in its normal form (see the module doc). Never fails: text that is no WWN comes
    back lowercased and stripped (it then matches no device)."""
    w = wwn.strip().casefold().removeprefix(BY_ID)
    w = w.removeprefix("wwn-")
    if w.startswith("nvme-") and w[5:].startswith((*_TYPED, "naa.")):
        w = w[5:]
    if w.startswith(_TYPED):
        return w
    for prefix in ("0x", "naa."):
        w = w.removeprefix(prefix)
    return w


def wwn_problem(wwn: str) -> str | None:
    """Why ``wwn`` (a user's text) is not a WWN; None if it is one."""
    w = norm_wwn(wwn)
    if w.startswith("eui."):
        ok = _HEX.fullmatch(w[4:]) is not None and len(w) - 4 in (16, 24, 32)
    elif w.startswith(("nvme.", "uuid.")):
        ok = re.fullmatch(r"[0-9a-f.-]+", w.partition(".")[2]) is not None
    elif w.startswith("t10."):
        ok = len(w) > 4 and w.isprintable()
    else:
        ok = _HEX.fullmatch(w) is not None and len(w) in (16, 32)
    if ok:
        return None
    return ("not a WWN: give 0x and 16 or 32 hex digits (SCSI, SAS, ATA: udev's ID_WWN), or "
            "NVMe's eui./nvme./uuid. form (/sys/block/nvme*/wwid)")


def _name_after(value: str, directory: str) -> str:
    """A /dev/disk/by-* link's name (the directory dropped if given)."""
    return value.strip().removeprefix(directory)


def norm_by_id(value: str) -> str:
    """A by-id name without its directory: ``wwn-0x5000c500a1b2c3d4``."""
    return _name_after(value, BY_ID)


def norm_by_path(value: str) -> str:
    """udev's ``ID_PATH`` (a by-path name without its directory)."""
    return _name_after(value, BY_PATH)


# --------------------------------------------------------------------------------------------
# The identity record
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceIdentity:
    """A block device as udev (or sysfs) names it; ``disk`` is the whole disk when this is a
    partition. ``serial``/``wwn`` are the values to show; ``serials``/``wwns`` every value the
    device answers to (udev's and the kernel's)."""

    name: str
    number: DevNum
    sysdir: str
    serial: str | None = None
    wwn: str | None = None
    disk: DeviceIdentity | None = None
    serials: tuple[str, ...] = ()
    wwns: tuple[str, ...] = ()
    by_id: tuple[str, ...] = ()
    """Names under /dev/disk/by-id (from udev's DEVLINKS)."""
    by_path: str | None = None
    """udev's ID_PATH."""
    model: str | None = None
    source: str = "sysfs"
    """``udev`` when the udev database had this device, else ``sysfs``."""

    def has_serial(self, value: str) -> bool:
        want = norm_serial(value)
        return any(norm_serial(s) == want for s in (*self.serials, self.serial) if s)

    def has_wwn(self, value: str) -> bool:
        want = norm_wwn(value)
        return any(norm_wwn(w) == want for w in (*self.wwns, self.wwn) if w)

    def has_model(self, value: str) -> bool:
        return self.model is not None and norm_model(self.model) == norm_model(value)


@dataclass(frozen=True)
class UdevRecord:
    """What the udev database says about one device (empty when it has no entry)."""

    properties: Mapping[str, str] = field(default_factory=dict)
    links: tuple[str, ...] = ()


def read_sysfs(path: str) -> str | None:
    """A sysfs attribute as stripped text (None if absent, unreadable or empty)."""
    try:
        with open(path, "rb") as f:
            value = f.read().decode(errors="replace").strip()
    except OSError:
        return None
    return value or None


def _vpd_serial(path: str) -> str | None:
    """SCSI VPD page 0x80 (unit serial number): 4-byte header, then ASCII."""
    try:
        with open(path, "rb") as f:
            page = f.read()
    except OSError:
        return None
    return parse_vpd_serial(page)


def parse_vpd_serial(page: bytes) -> str | None:
    """The serial in a VPD page 0x80 (None if ``page`` is not one or holds none)."""
    if len(page) < 4 or page[1] != 0x80:
        return None
    length = int.from_bytes(page[2:4], "big")
    text = page[4 : 4 + length].decode("ascii", errors="replace").strip()
    return text if text and text.isprintable() else None


_contexts = threading.local()


def _udev_context() -> Any:
    """This thread's pyudev context, made once (libudev's contexts are not to be shared
    between threads). Each new context loads libudev again, ~2 ms here and far more in a TCG
    guest, and every safety check of a device open looks its identity up."""
    context = getattr(_contexts, "context", None)
    if context is None:
        import pyudev

        context = _contexts.context = pyudev.Context()
    return context


def udev_record(number: DevNum) -> UdevRecord:
    """The udev database's entry for block device ``number`` (empty without one)."""
    if not os.path.exists(f"{UDEV_DATA}/b{number[0]}:{number[1]}"):
        return UdevRecord()
    try:
        import pyudev

        dev: Any = pyudev.Devices.from_device_number(
            _udev_context(), "block", os.makedev(*number))
        props = {str(k): str(v) for k, v in dev.properties.items()}
    except (ImportError, OSError, ValueError, LookupError):
        return UdevRecord()
    return UdevRecord(props, parse_devlinks(props.get("DEVLINKS", "")))


def parse_devlinks(text: str) -> tuple[str, ...]:
    """udev's DEVLINKS (space-separated absolute paths) as a tuple; anything else dropped."""
    return tuple(link for link in text.split() if link.startswith("/dev/"))


def _unique(*values: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def from_udev(name: str, number: DevNum, sysdir: str, record: UdevRecord,
              sysfs_serial: str | None, sysfs_wwn: str | None,
              sysfs_model: str | None) -> DeviceIdentity:
    """The identity of a whole disk from its udev record and what sysfs said."""
    p = record.properties
    serials = _unique(p.get("ID_SCSI_SERIAL"), p.get("ID_SERIAL_SHORT"), p.get("ID_SERIAL"),
                      sysfs_serial)
    wwns = _unique(p.get("ID_WWN_WITH_EXTENSION"), p.get("ID_WWN"), sysfs_wwn)
    return DeviceIdentity(
        name, number, sysdir,
        serial=serials[0] if serials else None,
        wwn=wwns[0] if wwns else None,
        serials=serials, wwns=wwns,
        by_id=tuple(sorted(norm_by_id(x) for x in record.links if x.startswith(BY_ID))),
        by_path=p.get("ID_PATH") or None,
        model=p.get("ID_MODEL") or sysfs_model,
        source="udev" if p else "sysfs",
    )


def _identity_at(sysdir: str, number: DevNum) -> DeviceIdentity:
    name = os.path.basename(sysdir)
    if os.path.exists(f"{sysdir}/partition"):
        parent = os.path.dirname(sysdir)
        disk = None
        dev = read_sysfs(f"{parent}/dev")
        if dev is not None:
            major, minor = (int(x) for x in dev.split(":"))
            disk = _identity_at(parent, (major, minor))
        return DeviceIdentity(name, number, sysdir, disk=disk,
                              source=disk.source if disk else "sysfs")
    serial = (read_sysfs(f"{sysdir}/serial") or read_sysfs(f"{sysdir}/device/serial")
              or _vpd_serial(f"{sysdir}/device/vpd_pg80"))
    wwn = read_sysfs(f"{sysdir}/wwid") or read_sysfs(f"{sysdir}/device/wwid")
    model = read_sysfs(f"{sysdir}/device/model")
    return from_udev(name, number, sysdir, udev_record(number), serial, wwn, model)


def identity_by_number(number: DevNum) -> DeviceIdentity:
    """Identity of block device ``(major, minor)``: the udev database where there is one,
    sysfs (/sys/dev/block) always."""
    sysdir = os.path.realpath(f"/sys/dev/block/{number[0]}:{number[1]}")
    return _identity_at(sysdir, number)
