"""Getting a lab disk for a test: select it from the inventory, lease it, check it, open it.

::

    lab = Lab(load_inventory("lab.toml"), allow_destructive=True)
    with lab.acquire(use="faults", owner="test_x") as disk:
        with disk.open(cache="none") as blk:
            blk.pwrite(0, b"...")

:meth:`Lab.plan` is the dry run: what each entry resolves to and what a test would do with it,
touching nothing (no lease, no exclusive-open probe, no write).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from rig.drivers.lab.inventory import (
    DiskEntry,
    Inventory,
    Resolved,
    entry_for_device,
    resolve,
    write_problems,
)
from rig.drivers.lab.lease import Lease, LeaseBusyError
from rig.drivers.udev import settle
from rig.errors import DeviceNotFoundError, RigError, UnsafeDeviceError

if TYPE_CHECKING:
    from rig.core.backend import BlockBackend


@dataclass
class LabDisk:
    """A leased, checked lab disk. ``destructive``: the checks for writing passed."""

    resolved: Resolved
    lease: Lease
    destructive: bool

    @property
    def path(self) -> str:
        return self.resolved.path

    @property
    def entry(self) -> DiskEntry:
        return self.resolved.entry

    def open(self, cache: str = "none") -> BlockBackend:
        """The disk as a backend: read-write if destructive (the safety check runs again at
        open), else read-only."""
        import rig

        spec = {"driver": "host_device", "filename": self.path}
        if self.destructive:
            spec["x-allow"] = self.path
        return rig.open(spec, cache=cache, read_only=not self.destructive)

    def release(self) -> None:
        """Give the disk back. After a destructive use, first wait for udev to take in what
        the test changed (a partition table, a filesystem), so the next holder's checks see
        it; the lease is released even when that wait fails."""
        try:
            if self.destructive and self.lease.held:
                settle(f"lab disk {self.entry.name!r} ({self.path})", changed=self.path)
        finally:
            self.lease.release()

    def __enter__(self) -> LabDisk:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


class Lab:
    """The inventory plus this run's permission to be destructive."""

    def __init__(self, inventory: Inventory, *, allow_destructive: bool = False) -> None:
        self.inventory = inventory
        self.allow_destructive = allow_destructive

    def candidates(self, use: str | None = None, name: str | None = None,
                   device: str | None = None, destructive: bool = False) -> list[DiskEntry]:
        """Entries a test asking for ``use`` (or the disk ``name``, or the device at
        ``device``) may get; selecting by ``use``, only ``destructive = true`` entries for a
        destructive test. An unlisted ``device`` is refused."""
        if device is not None:
            entry = entry_for_device(self.inventory, device)
            if entry is None:
                raise UnsafeDeviceError(
                    f"refusing {device}: it is not in the lab inventory {self.inventory.source} "
                    "(tests get lab devices only from the inventory; add a [[disk]] entry)")
            return [entry]
        if name is not None:
            return [self.inventory.entry(name)]
        return [d for d in self.inventory.disks
                if d.may_be_used_for(use) and (d.destructive or not destructive)]

    def destructive_problem(self, entry: DiskEntry) -> str | None:
        if not entry.destructive:
            return (f"disk {entry.name!r} is not marked destructive = true in "
                    f"{self.inventory.source}")
        if not self.allow_destructive:
            return "destructive tests need --rig-allow-destructive"
        return None

    def acquire(self, use: str | None = None, *, name: str | None = None,
                device: str | None = None, destructive: bool = True, owner: str = "",
                timeout: float = 0.0) -> LabDisk:
        """Lease the first free matching disk (waiting up to ``timeout`` seconds while all are
        leased) and check it. Raises UnsafeDeviceError (refused:
        not listed, not destructive, mounted, held, signature...), LeaseBusyError (all leased),
        DeviceNotFoundError (none present), ConfigError (no entry matches)."""
        entries = self.candidates(use, name, device, destructive)
        if not entries:
            kind = "destructively " if destructive else ""
            raise DeviceNotFoundError(f"{self.inventory.source}: no disk may be used {kind}"
                                      f"for {use!r}")
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            errors: list[RigError] = []
            for entry in entries:  # every free one first, then wait for a busy one
                try:
                    return self._acquire(entry, destructive, owner)
                except (LeaseBusyError, DeviceNotFoundError) as e:
                    errors.append(e)
            busy = any(isinstance(e, LeaseBusyError) for e in errors)
            if not busy or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if len(errors) == 1:
            raise errors[0]
        message = "no lab disk available: " + "; ".join(map(str, errors))
        if all(isinstance(e, LeaseBusyError) for e in errors):
            raise LeaseBusyError(message, {})
        raise DeviceNotFoundError(message)

    def _acquire(self, entry: DiskEntry, destructive: bool, owner: str) -> LabDisk:
        if destructive:
            problem = self.destructive_problem(entry)
            if problem:
                raise UnsafeDeviceError(f"refusing to write to lab disk {entry.name!r}: "
                                        f"{problem}")
        settle(f"lab disk {entry.name!r}")  # a disk just attached or changed: udev first
        resolved = resolve(entry)
        lease = Lease.acquire(self.inventory.lease_dir, resolved.lease_key, owner=owner)
        try:
            resolved = resolve(entry)  # again, under the lease
            if destructive:
                problems = write_problems(resolved)
                if problems:
                    raise UnsafeDeviceError(f"refusing to write to lab disk {entry.name!r} "
                                            f"({resolved.path}): {'; '.join(problems)}")
        except BaseException:
            lease.release()
            raise
        return LabDisk(resolved, lease, destructive)

    def plan(self, use: str | None = None, destructive: bool = True) -> list[str]:
        """The dry run: one line per entry (for ``use``) saying what a test would touch, or why
        it would be refused. Touches nothing: no lease, no exclusive-open probe, no write."""
        lines = []
        for entry in self.candidates(use):
            head = f"disk {entry.name!r} ({entry.identity_text()})"
            try:
                resolved = resolve(entry)
            except RigError as e:
                lines.append(f"{head}: would be skipped: {e}")
                continue
            if not (destructive and entry.destructive):
                lines.append(f"{head}: read-only use of {resolved.path}"
                             + (" (destructive = false)" if destructive else ""))
                continue
            problem = self.destructive_problem(entry)
            problems = ([problem] if problem else []) + write_problems(
                resolved, probe_exclusive=False)
            if problems:
                lines.append(f"{head}: would refuse to write to {resolved.path}: "
                             + "; ".join(problems))
            else:
                lines.append(f"{head}: would write to {resolved.path} (lease "
                             f"{resolved.lease_key} in {self.inventory.lease_dir})")
        return lines
