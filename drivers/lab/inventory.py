"""The lab inventory: which real disks tests may use, for what, and whether they may be written.

An inventory is a TOML file::

    lease_dir = "/run/rig/leases"          # optional; relative paths are from this file

    [[disk]]
    name = "scratch-hdd"                   # required, unique
    wwn = "0x5000c500a1b2c3d4"             # identity: at least one of wwn, serial, by_id,
    serial = "Z1D0ABC"                     #   by_path, model, path; every one given must match
    by_id = "wwn-0x5000c500a1b2c3d4"       # a /dev/disk/by-id name (the directory optional)
    by_path = "pci-0000:00:1f.2-ata-1"     # udev's ID_PATH (or /dev/disk/by-path/...)
    uses = ["faults", "stateful"]          # what tests may use it for (default: anything)
    destructive = true                     # destructive tests may write to it (default: false)
    allow_signature = false                # may hold a filesystem/partition signature

Tests get lab devices only from the inventory (:class:`Lab`). Before a write, the device's
identity is checked against its entry (disks renumber: /dev/sdb today may be another disk
tomorrow; one line names the entry, the key, the value expected and the value found), and it
must not be mounted, in use as swap, held or opened exclusively, nor carry a
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
from rig.drivers import identity as ids
from rig.drivers import safety
from rig.drivers.identity import DeviceIdentity
from rig.drivers.lab import signatures
from rig.drivers.lab.lease import Lease, LeaseBusyError, default_lease_dir
from rig.drivers.safety import AllowList
from rig.errors import ConfigError, DeviceNotFoundError, UnsafeDeviceError

IDENTITY_KEYS = ("wwn", "serial", "by_id", "by_path", "model", "path")
DISK_KEYS = ("name", *IDENTITY_KEYS, "uses", "destructive", "allow_signature", "description")
TOP_KEYS = ("lease_dir", "disk")


@dataclass(frozen=True)
class DiskEntry:
    """One ``[[disk]]`` of the inventory."""

    name: str
    wwn: str | None = None
    serial: str | None = None
    by_id: str | None = None
    """A /dev/disk/by-id name, without the directory."""
    by_path: str | None = None
    """udev's ID_PATH (a /dev/disk/by-path name without the directory)."""
    model: str | None = None
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


def _identity_value(where: str, key: str, raw: Any) -> str:
    """One identity key's value, checked and in the form it is compared in."""
    value = _text(where, key, raw)
    if not value.isprintable():
        raise ConfigError(f"{where}: {key} {value!r} holds control characters")
    if key == "path":
        if not value.startswith("/"):
            raise ConfigError(f"{where}: path must be an absolute path, got {value!r}")
    elif key == "wwn":
        problem = ids.wwn_problem(value)
        if problem:
            raise ConfigError(f"{where}: wwn {value!r} is {problem}")
    elif key in ("by_id", "by_path"):
        directory = ids.BY_ID if key == "by_id" else ids.BY_PATH
        name = value.removeprefix(directory)
        if not name or "/" in name or any(c.isspace() for c in name):
            example = ("wwn-0x5000c500a1b2c3d4" if key == "by_id"
                       else "pci-0000:00:1f.2-ata-1 (udev's ID_PATH)")
            raise ConfigError(f"{where}: {key} must be a name in {directory} such as "
                              f"{example}, got {value!r}")
        return name
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
    ident = {k: _identity_value(where, k, raw[k]) for k in IDENTITY_KEYS if k in raw}
    if not ident:
        raise ConfigError(f"{where}: needs an identity: one of {', '.join(IDENTITY_KEYS)}")
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
            return f"wwn-{ids.norm_wwn(ident.wwn)}"
        if ident.serial:
            return f"serial-{ids.norm_serial(ident.serial)}"
        major, minor = self.identity.number
        return f"dev-{major}:{minor}"


def _whole_disks() -> Iterator[tuple[str, tuple[int, int]]]:
    """Every whole disk with a medium (an unbound loop device or an empty drive, size 0, can be
    no lab disk: skipping them saves reading their identity)."""
    try:
        names = sorted(os.listdir("/sys/block"))
    except OSError:
        return
    for name in names:
        try:
            with open(f"/sys/block/{name}/size") as f:
                if int(f.read()) == 0:
                    continue
            with open(f"/sys/block/{name}/dev") as f:
                major, minor = (int(x) for x in f.read().split(":"))
        except (OSError, ValueError):
            continue
        yield f"/dev/{name}", (major, minor)


def _found(key: str, ident: DeviceIdentity) -> str:
    """What the device has for ``key``, as the refusal shows it."""
    disk = ident.disk or ident
    values: tuple[str | None, ...]
    if key == "wwn":
        values = (disk.wwn,)
    elif key == "serial":
        values = (disk.serial,)
    elif key == "by_id":
        values = disk.by_id
    elif key == "by_path":
        values = (disk.by_path,)
    else:
        values = (disk.model,)
    shown = ", ".join(dict.fromkeys(v for v in values if v))
    if shown:
        return shown
    if key in ("by_id", "by_path") and disk.source == "sysfs":
        return f"unknown ({ids.FALLBACK_NOTE})"
    return "none"


def _has(key: str, want: str, ident: DeviceIdentity) -> bool:
    disk = ident.disk or ident
    if key == "wwn":
        return disk.has_wwn(want)
    if key == "serial":
        return disk.has_serial(want)
    if key == "model":
        return disk.has_model(want)
    if key == "by_id":
        return want in disk.by_id or _link_is(ids.BY_ID + want, ident.number)
    return want == disk.by_path or _link_is(ids.BY_PATH + want, ident.number)


def _link_is(link: str, number: tuple[int, int]) -> bool:
    """The /dev/disk link exists and leads to ``number`` (also without a udev database)."""
    return safety.block_number(link) == number


def _mismatch(entry: DiskEntry, path: str, ident: DeviceIdentity) -> str | None:
    """Why the device at ``path`` is not ``entry`` (None if every given identity matches):
    the first key that disagrees, with the value expected and the value found."""
    for key in ("wwn", "serial", "by_id", "by_path", "model"):
        want = getattr(entry, key)
        if want and not _has(key, want, ident):
            return (f"{key}: expected {want}, found {_found(key, ident)} at {path} (disks "
                    "renumber: check which disk this is and fix the inventory)")
    return None


def _located(entry: DiskEntry) -> tuple[str, list[tuple[str, DeviceIdentity]]]:
    """The key that finds ``entry``'s device and the devices it finds: the device at ``path``,
    at its by-id or by-path link, or every whole disk with its WWN, serial or model."""
    if entry.path:
        number = safety.block_number(entry.path)
        if number is None:
            raise DeviceNotFoundError(f"lab disk {entry.name!r}: path {entry.path} is not a "
                                      "block device (is the disk attached?)")
        return "path", [(entry.path, ids.identity_by_number(number))]
    disks = [(p, ids.identity_by_number(n)) for p, n in _whole_disks()]
    for key in ("by_id", "by_path", "wwn", "serial", "model"):
        want = getattr(entry, key)
        if want:
            return key, [(p, i) for p, i in disks if _has(key, want, i)]
    raise AssertionError("an entry always has an identity")


def resolve(entry: DiskEntry) -> Resolved:
    """The device ``entry`` names. Raises DeviceNotFoundError if it is absent, UnsafeDeviceError
    if the device found disagrees with another key of the entry (one line: the entry, the key,
    expected and found) or several devices match."""
    key, found = _located(entry)
    if not found:
        why = f"; {ids.FALLBACK_NOTE}" if key in ("by_id", "by_path") and not \
            ids.udev_database() else ""
        raise DeviceNotFoundError(f"lab disk {entry.name!r}: no device with "
                                  f"{entry.identity_text()} is present{why}")
    agreeing = [(p, i) for p, i in found if _mismatch(entry, p, i) is None]
    if not agreeing:
        path, ident = found[0]
        raise UnsafeDeviceError(f"lab disk {entry.name!r}: {_mismatch(entry, path, ident)}")
    if len(agreeing) > 1:
        raise UnsafeDeviceError(f"lab disk {entry.name!r}: {entry.identity_text()} matches "
                                f"{', '.join(p for p, _ in agreeing)}; make the identity unique")
    return Resolved(entry, agreeing[0][0], agreeing[0][1])


@dataclass(frozen=True)
class Survey:
    """What one entry names right now, for listings: the device (when one was found) and why
    it would be refused (None when it resolves)."""

    entry: DiskEntry
    path: str | None
    number: tuple[int, int] | None
    problem: str | None


def survey(inventory: Inventory) -> list[Survey]:
    """Every entry, resolved or with its refusal. Reads only."""
    out = []
    for entry in inventory.disks:
        try:
            r = resolve(entry)
        except (DeviceNotFoundError, UnsafeDeviceError) as e:
            try:
                _, found = _located(entry)
            except DeviceNotFoundError:
                found = []
            path, number = (found[0][0], found[0][1].number) if len(found) == 1 else (None, None)
            out.append(Survey(entry, path, number, str(e)))
        else:
            out.append(Survey(entry, r.path, r.identity.number, None))
    return out


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
    "DiskEntry", "Inventory", "Lease", "LeaseBusyError", "Resolved", "Survey",
    "entry_for_device", "load_inventory", "parse_inventory", "resolve", "survey",
    "write_problems",
]
