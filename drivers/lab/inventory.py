"""The lab inventory: which real disks tests may use, for what, and whether they may be written.

An inventory is a TOML file::

    lease_dir = "/run/rig/leases"          # optional; relative paths are from this file

    [[disk]]
    name = "scratch-hdd"                   # required, unique
    wwn = "0x5000c500a1b2c3d4"             # identity: at least one of wwn, serial, by_path, path
    serial = "Z1D0ABC"                     # every one given must match the device
    uses = ["faults", "stateful"]          # what tests may use it for (default: anything)
    destructive = true                     # destructive tests may write to it (default: false)
    allow_signature = false                # may hold a filesystem/partition signature

Tests get lab devices only from the inventory (:class:`Lab`). Before a write, the device's
identity is checked against its entry (disks renumber: /dev/sdb today may be another disk
tomorrow), and it must not be mounted, in use as swap, held or opened exclusively, nor carry a
known signature unless the entry allows it. A lease (:mod:`rig.drivers.lab.lease`) keeps other
processes off it meanwhile. Every refusal is an UnsafeDeviceError saying why and what to do,
and no check writes anything.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from rig.core.documents import decode, read_document
from rig.drivers import safety
from rig.drivers.lab import signatures
from rig.drivers.lab.lease import Lease, LeaseBusyError, default_lease_dir
from rig.drivers.safety import AllowList, DeviceIdentity
from rig.errors import ConfigError, DeviceNotFoundError, UnsafeDeviceError

IDENTITY_KEYS = ("wwn", "serial", "by_path", "path")
DISK_KEYS = ("name", *IDENTITY_KEYS, "uses", "destructive", "allow_signature", "description")
TOP_KEYS = ("lease_dir", "disk")


@dataclass(frozen=True)
class DiskEntry:
    """One ``[[disk]]`` of the inventory."""

    name: str
    wwn: str | None = None
    serial: str | None = None
    by_path: str | None = None
    path: str | None = None
    uses: tuple[str, ...] | None = None
    """None: any use."""
    destructive: bool = False
    allow_signature: bool = False
    description: str = ""

    def may_be_used_for(self, use: str | None) -> bool:
        return use is None or self.uses is None or use in self.uses

    def identity_text(self) -> str:
        return ", ".join(f"{k} {getattr(self, k)}" for k in IDENTITY_KEYS if getattr(self, k))


@dataclass(frozen=True)
class Inventory:
    source: str
    disks: tuple[DiskEntry, ...]
    lease_dir: str = field(default_factory=default_lease_dir)

    def entry(self, name: str) -> DiskEntry:
        for disk in self.disks:
            if disk.name == name:
                return disk
        known = ", ".join(d.name for d in self.disks) or "none"
        raise ConfigError(f"{self.source}: no disk named {name!r} (disks: {known})")


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def _text(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return value.strip()


def _flag(where: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def _disk(source: str, index: int, raw: Any) -> DiskEntry:
    where = f"{source}: disk entry {index + 1}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a table ([[disk]]), got {raw!r}")
    if "name" not in raw:
        raise ConfigError(f"{where}: missing key 'name'")
    name = _text(where, "name", raw["name"])
    where = f"{source}: disk {name!r}"
    for key in raw:
        if key not in DISK_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(DISK_KEYS)})")
    ident = {k: _text(where, k, raw[k]) for k in IDENTITY_KEYS if k in raw}
    if not ident:
        raise ConfigError(f"{where}: needs an identity: one of {', '.join(IDENTITY_KEYS)}")
    for key in ("by_path", "path"):
        if key in ident and not ident[key].startswith("/"):
            raise ConfigError(f"{where}: {key} must be an absolute path, got {ident[key]!r}")
    uses = raw.get("uses")
    if uses is not None and (not isinstance(uses, list)
                             or not all(isinstance(u, str) and u for u in uses)):
        raise ConfigError(f"{where}: uses must be a list of strings, got {uses!r}")
    return DiskEntry(
        name=name, **ident, uses=tuple(uses) if uses is not None else None,
        destructive=_flag(where, "destructive", raw.get("destructive", False)),
        allow_signature=_flag(where, "allow_signature", raw.get("allow_signature", False)),
        description=str(raw.get("description", "")),
    )


def parse_inventory(text: str, source: str = "<inventory>", base_dir: str = ".") -> Inventory:
    """Parse inventory TOML. Errors are ConfigErrors naming the file, the entry and the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(f"{source}: unknown key {key!r} (known: {', '.join(TOP_KEYS)})")
    raw_disks = data.get("disk", [])
    if not isinstance(raw_disks, list):
        raise ConfigError(f"{source}: 'disk' must be an array of tables ([[disk]])")
    disks = tuple(_disk(source, i, raw) for i, raw in enumerate(raw_disks))
    seen: set[str] = set()
    for disk in disks:
        if disk.name in seen:
            raise ConfigError(f"{source}: disk {disk.name!r} is listed twice")
        seen.add(disk.name)
    lease_dir = default_lease_dir()
    if "lease_dir" in data:
        lease_dir = os.path.join(base_dir, _text(source, "lease_dir", data["lease_dir"]))
    return Inventory(source, disks, lease_dir)


def load_inventory(path: str | os.PathLike[str]) -> Inventory:
    path = os.fspath(path)
    text = decode(read_document(path, "lab inventory"), path)
    return parse_inventory(text, path, os.path.dirname(os.path.abspath(path)))


# --------------------------------------------------------------------------------------------
# Identity
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """The device an entry names right now."""

    entry: DiskEntry
    path: str
    identity: DeviceIdentity

    @property
    def lease_key(self) -> str:
        """Stable across renumbering where the disk says who it is (WWN, serial)."""
        ident = self.identity.disk or self.identity
        if ident.wwn:
            return f"wwn-{safety.norm_wwn(ident.wwn)}"
        if ident.serial:
            return f"serial-{safety.norm_serial(ident.serial)}"
        major, minor = self.identity.number
        return f"dev-{major}:{minor}"


def _whole_disks() -> Iterator[tuple[str, tuple[int, int]]]:
    try:
        names = sorted(os.listdir("/sys/block"))
    except OSError:
        return
    for name in names:
        try:
            with open(f"/sys/block/{name}/dev") as f:
                major, minor = (int(x) for x in f.read().split(":"))
        except (OSError, ValueError):
            continue
        yield f"/dev/{name}", (major, minor)


def _mismatch(entry: DiskEntry, path: str, ident: DeviceIdentity) -> str | None:
    """Why the device at ``path`` is not ``entry`` (None if every given identity matches)."""
    for key in ("wwn", "serial"):
        want = getattr(entry, key)
        if want and not AllowList.from_entries([f"{key}:{want}"]).allows(ident):
            has = getattr(ident.disk or ident, key)
            return (f"{path} has {key} {has or 'none'}, the inventory says {want} (disks "
                    "renumber: check which disk this is and fix the inventory)")
    return None


def resolve(entry: DiskEntry) -> Resolved:
    """The device ``entry`` names. Raises DeviceNotFoundError if it is absent, UnsafeDeviceError
    if its identities disagree (path and by_path lead to different devices, or the device
    there has another serial or WWN)."""
    numbers = {}
    for key in ("path", "by_path"):
        given = getattr(entry, key)
        if given:
            number = safety.block_number(given)
            if number is None:
                raise DeviceNotFoundError(f"lab disk {entry.name!r}: {key} {given} is not a "
                                          "block device (is the disk attached?)")
            numbers[key] = (given, number)
    if len({n for _, n in numbers.values()}) > 1:
        raise UnsafeDeviceError(f"lab disk {entry.name!r}: path {entry.path} and by_path "
                                f"{entry.by_path} are different devices")
    if numbers:
        path, number = next(iter(numbers.values()))
        ident = safety.identity_by_number(number)
        problem = _mismatch(entry, path, ident)
        if problem:
            raise UnsafeDeviceError(f"lab disk {entry.name!r}: {problem}")
        return Resolved(entry, path, ident)
    found = [(p, safety.identity_by_number(n)) for p, n in _whole_disks()]
    found = [(p, i) for p, i in found if _mismatch(entry, p, i) is None]
    if not found:
        raise DeviceNotFoundError(f"lab disk {entry.name!r}: no device with "
                                  f"{entry.identity_text()} is present")
    if len(found) > 1:
        raise UnsafeDeviceError(f"lab disk {entry.name!r}: {entry.identity_text()} matches "
                                f"{', '.join(p for p, _ in found)}; make the identity unique")
    return Resolved(entry, found[0][0], found[0][1])


def entry_for_device(inventory: Inventory, path: str) -> DiskEntry | None:
    """The inventory entry for the device at ``path`` (None: unlisted or not a block device)."""
    number = safety.block_number(path)
    if number is None:
        return None
    for disk in inventory.disks:
        try:
            if resolve(disk).identity.number == number:
                return disk
        except (DeviceNotFoundError, UnsafeDeviceError):
            continue
    return None


# --------------------------------------------------------------------------------------------
# Checks before a write
# --------------------------------------------------------------------------------------------


def write_problems(resolved: Resolved, *, probe_exclusive: bool = True) -> list[str]:
    """Why the rig must not write to the device now (empty: it may). Reads only.

    ``probe_exclusive=False`` leaves out the exclusive-open probe (for dry runs: the probe
    briefly blocks other exclusive openers such as mount and mkfs).
    """
    problems = []
    usage = safety.usage_by_number(resolved.identity.number)
    if usage.in_use or probe_exclusive:
        allow = AllowList.from_entries([resolved.path])
        reason = (safety.writable_problem(resolved.path, allow) if probe_exclusive
                  else safety.usage_problem(resolved.path, usage))
        if reason:
            problems.append(reason)
    if not resolved.entry.allow_signature:
        try:
            found = signatures.detect(resolved.path)
        except OSError as e:
            problems.append(f"cannot read it to look for signatures: {e.strerror}")
        else:
            if found:
                problems.append(
                    f"it holds a known signature: {', '.join(map(str, found))}; if it is "
                    f"scratch, wipe it (wipefs -a {resolved.path}) or set allow_signature = "
                    f"true for disk {resolved.entry.name!r} in the inventory")
    return problems


__all__ = [
    "DiskEntry", "Inventory", "Lease", "LeaseBusyError", "Resolved", "entry_for_device",
    "load_inventory", "parse_inventory", "resolve", "write_problems",
]
