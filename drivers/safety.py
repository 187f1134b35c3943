"""The rig's guard against writing to the wrong disk.

A block device may be opened for writing only if nothing uses it (no mounted filesystem, swap,
holder such as device-mapper or RAID, or exclusive opener) and either this process created it
(:func:`rig.drivers.loop.owned_device_numbers`) or the user allowed it by path, serial or WWN
(``--allow``, ``RIG_ALLOW_DEVICES``). A device in use is refused even when allowed: allowing says
"this disk is scratch", not "corrupt the filesystem mounted on it".
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from rig.drivers.identity import DeviceIdentity as DeviceIdentity
from rig.drivers.identity import identity_by_number as identity_by_number
from rig.drivers.identity import norm_serial as norm_serial
from rig.drivers.identity import norm_wwn as norm_wwn
from rig.drivers.identity import read_sysfs
from rig.drivers.loop import owned_device_numbers
from rig.drivers.nodes.posix import open_error
from rig.errors import ConfigError, UnsafeDeviceError

DevNum = tuple[int, int]

# --------------------------------------------------------------------------------------------
# Allow list
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AllowList:
    """Devices the user allowed the rig to write to although the rig did not create them."""

    paths: frozenset[str] = frozenset()
    serials: frozenset[str] = frozenset()
    wwns: frozenset[str] = frozenset()

    ENV: ClassVar[str] = "RIG_ALLOW_DEVICES"

    @classmethod
    def from_entries(cls, entries: Iterable[str], *, source: str = "--allow") -> AllowList:
        """Parse entries: ``serial:XYZ``, ``wwn:0x...``, or a device path (a bare name such as
        ``sdb`` means ``/dev/sdb``). Paths may contain colons (``/dev/disk/by-path/...``)."""
        paths: set[str] = set()
        serials: set[str] = set()
        wwns: set[str] = set()
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            kind, _, value = entry.partition(":")
            kind = kind.casefold()
            if kind in ("serial", "wwn"):
                if not value.strip():
                    raise ConfigError(f"{source} entry {entry!r} has no value after '{kind}:'")
                (serials if kind == "serial" else wwns).add(
                    norm_serial(value) if kind == "serial" else norm_wwn(value)
                )
            elif "/" not in entry:
                paths.add(f"/dev/{entry}")
            else:
                paths.add(os.path.abspath(entry))
        return cls(frozenset(paths), frozenset(serials), frozenset(wwns))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AllowList:
        """The comma-separated ``RIG_ALLOW_DEVICES`` entries (empty if unset)."""
        env = os.environ if environ is None else environ
        return cls.from_entries(env.get(cls.ENV, "").split(","), source=cls.ENV)

    def merged(self, other: AllowList | Iterable[str]) -> AllowList:
        """This list plus ``other`` (another AllowList or raw CLI ``--allow`` entries)."""
        if not isinstance(other, AllowList):
            other = AllowList.from_entries(other)
        return AllowList(
            self.paths | other.paths, self.serials | other.serials, self.wwns | other.wwns
        )

    def __bool__(self) -> bool:
        return bool(self.paths or self.serials or self.wwns)

    def allows(self, ident: DeviceIdentity) -> bool:
        """Whether the device (or, for a partition, its whole disk) is on the list. A serial
        or WWN matches any the device answers to (udev's ID_SERIAL, ID_SERIAL_SHORT,
        ID_SCSI_SERIAL, ID_WWN...; the kernel's), in :mod:`rig.drivers.identity`'s normal form.

        Paths match by device number, so symlinks (/dev/disk/by-id/...) and other nodes for the
        same device count, and a path that does not exist matches nothing.
        """
        candidates = [ident] if ident.disk is None else [ident, ident.disk]
        for dev in candidates:
            if any(dev.has_serial(s) for s in self.serials):
                return True
            if any(dev.has_wwn(w) for w in self.wwns):
                return True
            for path in self.paths:
                if _same_device(path, dev.number):
                    return True
        return False


def _same_device(path: str, number: DevNum) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISBLK(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == number


# --------------------------------------------------------------------------------------------
# Usage: mounts, swap, holders
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    device: str
    """Kernel name of the mounted device: the one asked about, one of its partitions, or (when
    it is a partition) its whole disk."""
    mountpoint: str


@dataclass(frozen=True)
class Holder:
    device: str
    """Kernel name of the held device, as for :attr:`Mount.device`."""
    holder: str
    """Kernel name of the holder (``dm-0``, ``md127``...)."""


@dataclass(frozen=True)
class DeviceUsage:
    """Who uses a block device (including its partitions) right now."""

    name: str
    mounts: tuple[Mount, ...] = ()
    swaps: tuple[str, ...] = ()
    holders: tuple[Holder, ...] = ()
    partitions: tuple[str, ...] = ()

    @property
    def mountpoints(self) -> list[str]:
        return [m.mountpoint for m in self.mounts]

    @property
    def holder_names(self) -> list[str]:
        return [h.holder for h in self.holders]

    @property
    def in_use(self) -> bool:
        return bool(self.mounts or self.swaps or self.holders)


def _unescape(s: str) -> str:
    r"""/proc/self/mountinfo and /proc/swaps escape space, tab, newline and \ as \ooo."""
    if "\\" not in s:
        return s
    return s.encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")


def block_number(path: str) -> DevNum | None:
    """A block device's (major, minor); None for anything else or a path that is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def _mount_table() -> list[tuple[DevNum, DevNum | None, str]]:
    """``(st_dev of the mount, device of the mount source if it is a block node, mountpoint)``.

    The source check catches filesystems (btrfs) whose st_dev is an anonymous number.
    """
    table = []
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        try:
            major, minor = (int(x) for x in fields[2].split(":"))
            sep = fields.index("-", 6)
            source = _unescape(fields[sep + 2])
        except (IndexError, ValueError):
            continue
        src_dev = block_number(source) if source.startswith("/") else None
        table.append(((major, minor), src_dev, _unescape(fields[4])))
    return table


def _swap_devices() -> set[DevNum]:
    found = set()
    try:
        with open("/proc/swaps") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return set()
    for line in lines:
        if not line.strip():
            continue
        number = block_number(_unescape(line.split()[0]))
        if number is not None:
            found.add(number)
    return found


def _partitions(ident: DeviceIdentity) -> list[tuple[str, DevNum]]:
    parts = []
    try:
        entries = sorted(os.listdir(ident.sysdir))
    except OSError:
        return []
    for entry in entries:
        sub = f"{ident.sysdir}/{entry}"
        if not os.path.exists(f"{sub}/partition"):
            continue
        dev = read_sysfs(f"{sub}/dev")
        if dev is not None:
            major, minor = (int(x) for x in dev.split(":"))
            parts.append((entry, (major, minor)))
    return parts


def usage_by_number(number: DevNum) -> DeviceUsage:
    """Mounts, swap and holders of a device, of its partitions, and (for a partition) of its
    whole disk itself."""
    ident = identity_by_number(number)
    parts = _partitions(ident)
    checked = [(ident.name, number, ident.sysdir)]
    checked.extend((n, d, f"{ident.sysdir}/{n}") for n, d in parts)
    if ident.disk is not None:
        checked.append((ident.disk.name, ident.disk.number, ident.disk.sysdir))
    mounts: list[Mount] = []
    holders: list[Holder] = []
    swaps: list[str] = []
    table = _mount_table()
    swap_devs = _swap_devices()
    for name, dev, sysdir in checked:
        mounts.extend(Mount(name, mp) for st_dev, src, mp in table if dev in (st_dev, src))
        if dev in swap_devs:
            swaps.append(name)
        with contextlib.suppress(OSError):
            holders.extend(Holder(name, h) for h in sorted(os.listdir(f"{sysdir}/holders")))
    return DeviceUsage(
        ident.name, tuple(mounts), tuple(swaps), tuple(holders), tuple(n for n, _ in parts)
    )


def device_usage(path: str) -> DeviceUsage:
    """Who uses block device ``path``. Raises ConfigError if it is not a block device."""
    number = block_number(path)
    if number is None:
        raise ConfigError(f"{path} is not a block device")
    return usage_by_number(number)


# --------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------


def _exclusively_open(path: str) -> bool:
    """Whether someone holds the device with O_EXCL (a mount or swap in another mount namespace,
    mkfs, md, a VM...): then our own exclusive open fails with EBUSY."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_EXCL | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        return e.errno == errno.EBUSY
    os.close(fd)
    return False


def usage_problem(path: str, usage: DeviceUsage) -> str | None:
    """Why ``path`` (with ``usage``) must not be written: mounted, swap, held; None if free."""
    def whose(dev: str) -> str:
        if dev == usage.name:
            return "it"
        return f"its {'partition' if dev in usage.partitions else 'disk'} /dev/{dev}"

    if usage.mounts:
        m = usage.mounts[0]
        return f"{whose(m.device)} is mounted at {m.mountpoint} (unmount it first)"
    if usage.swaps:
        dev = usage.swaps[0]
        target = path if dev == usage.name else f"/dev/{dev}"
        return f"{whose(dev)} is in use as swap (run 'swapoff {target}' first)"
    if usage.holders:
        h = usage.holders[0]
        return (
            f"{whose(h.device)} is held by {h.holder} (a device-mapper, RAID or similar device "
            "is built on it; remove that first)"
        )
    return None


def writable_problem(path: str, allow: AllowList | None = None) -> str | None:
    """Why the rig must not write to ``path`` (``"<reason> (<fix>)"``), or None if it may.

    Regular files and paths that do not exist yet are always fine. ``allow`` adds to the
    entries in ``RIG_ALLOW_DEVICES``, which are always honoured.
    """
    number = block_number(path)
    if number is None:
        return None
    problem = usage_problem(path, usage_by_number(number))
    if problem is not None:
        return problem
    ident = identity_by_number(number)
    owned = owned_device_numbers()
    if number not in owned and (ident.disk is None or ident.disk.number not in owned):
        effective = AllowList.from_env()
        if allow is not None:
            effective = effective.merged(allow)
        if not effective.allows(ident):
            return f"the rig did not create it (allow it with --allow {path} or {AllowList.ENV})"
    # Last, and only for devices we may use: an exclusive open briefly blocks other exclusive
    # openers (mount, mkfs), so never probe devices that belong to someone else.
    if _exclusively_open(path):
        return "another program or the kernel has it open exclusively (stop that user first)"
    return None


def stat_device_node(path: str, refusal: str) -> os.stat_result:
    """What device drivers check before opening ``path``: it exists (else the open error in
    QEMU's wording) and is a block or character device (else ``ConfigError(refusal)``)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise open_error(path, e) from None
    if not (stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode)):
        raise ConfigError(refusal)
    return st


def allow_option(value: str | None) -> AllowList | None:
    """A driver's ``x-allow`` option (comma-separated entries), or None when empty."""
    return AllowList.from_entries(value.split(",")) if value else None


def check_writable(path: str, allow: AllowList | None = None) -> None:
    """Raise UnsafeDeviceError unless the rig may open ``path`` for writing (see module doc)."""
    problem = writable_problem(path, allow)
    if problem is not None:
        raise UnsafeDeviceError(f"refusing to write to {path}: {problem}")
