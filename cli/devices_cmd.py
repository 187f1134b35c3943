"""``rig devices``: list block devices, who they are (WWN, serial, by-id, by-path, model), the
lab entry each one is (``--lab``), and whether the rig may write to them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any

from rig.drivers.identity import FALLBACK_NOTE, udev_database
from rig.drivers.lab.inventory import load_inventory, survey
from rig.drivers.safety import AllowList
from rig.drivers.udev import DeviceInfo, list_block_devices

_HEADERS = (
    "NAME", "SIZE", "LBS", "PBS", "ROT", "RM", "RO", "MOUNTED/HOLDERS", "WWN", "SERIAL",
    "BY-ID", "BY-PATH", "MODEL", "LAB", "RIG-WRITABLE",
)
_RIGHT_ALIGNED = frozenset({"SIZE", "LBS", "PBS"})


def human_size(n: int) -> str:
    """Bytes as lsblk prints them: 512B, 64M, 1.5G (binary units)."""
    value = float(n)
    for unit in ("B", "K", "M", "G", "T", "P"):
        if value < 1024 or unit == "P":
            if unit == "B" or value == int(value):
                return f"{int(value)}{unit}"
            return f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("device", nargs="?", metavar="DEV",
                        help="show one block device's (or graph's) per-request limits and "
                        "write cache instead of the list (cli/device_detail.py)")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.add_argument(
        "--all", action="store_true", help="also list loop devices with no backing file"
    )
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="DEV",
        help="treat DEV (path, serial:X or wwn:X) as allowed, like RIG_ALLOW_DEVICES",
    )
    parser.add_argument(
        "--lab", metavar="FILE", default=None,
        help="a lab inventory (as pytest --rig-lab): show the entry each device is",
    )


def _yes_no(flag: bool) -> str:
    return "1" if flag else "0"


def _by_id(names: list[str]) -> str:
    """The most telling by-id name (a wwn- one, else the first) and how many more there are."""
    if not names:
        return "-"
    best = next((n for n in names if n.startswith("wwn-")), names[0])
    return best + (f" (+{len(names) - 1})" if len(names) > 1 else "")


def _row(d: DeviceInfo, lab: str) -> tuple[str, ...]:
    usage = ", ".join([*d.mountpoints, *(f"held:{h}" for h in d.holders)]) or "-"
    writable = "yes" if d.writable_by_rig else f"no: {d.why_not}"
    return (
        d.name, human_size(d.size), str(d.logical_block_size), str(d.physical_block_size),
        _yes_no(d.rotational), _yes_no(d.removable), _yes_no(d.read_only), usage,
        d.wwn or "-", d.serial or "-", _by_id(d.by_id), d.by_path or "-",
        (d.model or "-").replace(" ", "_"), lab or "-", writable,
    )


def format_table(devices: list[DeviceInfo], lab: dict[str, str] | None = None) -> str:
    """An aligned text table; the last column is not padded. ``lab``: device path -> the lab
    entry it is (or ``!name`` when the entry names it but its identity disagrees)."""
    rows = [_HEADERS, *(_row(d, (lab or {}).get(d.path, "")) for d in devices)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADERS))]
    lines = []
    for r in rows:
        cells = [
            cell.rjust(w) if head in _RIGHT_ALIGNED else cell.ljust(w)
            for head, cell, w in zip(_HEADERS[:-1], r[:-1], widths[:-1], strict=True)
        ]
        lines.append("  ".join([*cells, r[-1]]))
    return "\n".join(lines)


def _lab_matches(inventory_path: str | None,
                 devices: list[DeviceInfo]) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """From the inventory: device path -> entry name (``!name`` if refused), device path ->
    the refusal, and one line for each entry that names no listed device."""
    if not inventory_path:
        return {}, {}, []
    numbers = {}
    for d in devices:
        try:
            st = os.stat(d.path)
        except OSError:
            continue
        numbers[(os.major(st.st_rdev), os.minor(st.st_rdev))] = d.path
    names: dict[str, str] = {}
    problems: dict[str, str] = {}
    unplaced = []
    for found in survey(load_inventory(inventory_path)):
        path = numbers.get(found.number) if found.number is not None else None
        if path is None:
            unplaced.append(found.problem or f"lab disk {found.entry.name!r}: not listed here")
            continue
        names[path] = found.entry.name if found.problem is None else f"!{found.entry.name}"
        if found.problem is not None:
            problems[path] = found.problem
    return names, problems, unplaced


def run(args: argparse.Namespace) -> int:
    """Print the device list; returns the exit status."""
    if getattr(args, "device", None):
        from rig.cli.device_detail import show

        return show(args)
    allow = AllowList.from_entries(getattr(args, "allow", None) or [])
    devices = list_block_devices(allow, include_unbound=getattr(args, "all", False))
    names, problems, unplaced = _lab_matches(getattr(args, "lab", None), devices)
    if not udev_database():
        print(f"rig devices: {FALLBACK_NOTE}", file=sys.stderr)
    for line in unplaced:
        print(f"rig devices: {line}", file=sys.stderr)
    if getattr(args, "json", False):
        rows: list[dict[str, Any]] = []
        for d in devices:
            row = dataclasses.asdict(d)
            row["lab_entry"] = names.get(d.path, "").lstrip("!") or None
            row["lab_problem"] = problems.get(d.path)
            rows.append(row)
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(devices, names))
    return 0

