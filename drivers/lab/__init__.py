"""The lab: real disks named in an inventory, checked and leased before a test writes to them.

:mod:`.inventory` (the inventory file, identity, the checks before a write), :mod:`.labdisk`
(select, lease, check, open; the dry run), :mod:`.lease` (flock leases), :mod:`.signatures`
(filesystem and partition-table magic, read only). The write gate every driver shares,
:mod:`rig.drivers.safety`, stays outside: the lab builds on it, node drivers need it without
the lab. ``from rig.drivers.lab import LabDisk, load_inventory`` is the way in.
"""

from rig.drivers.lab.inventory import (
    DiskEntry,
    Inventory,
    Lease,
    LeaseBusyError,
    Resolved,
    entry_for_device,
    load_inventory,
    parse_inventory,
    resolve,
    write_problems,
)
from rig.drivers.lab.labdisk import Lab, LabDisk

__all__ = [
    "DiskEntry", "Inventory", "Lab", "LabDisk", "Lease", "LeaseBusyError", "Resolved",
    "Survey", "entry_for_device", "load_inventory", "parse_inventory", "resolve", "survey",
    "write_problems",
]
