"""``rig devices``: list block devices and whether the rig may write to them."""

from __future__ import annotations

import argparse
import dataclasses
import json

from rig.drivers.safety import AllowList
from rig.drivers.udev import DeviceInfo, list_block_devices

_HEADERS = (
    "NAME", "SIZE", "LBS", "PBS", "ROT", "RM", "RO", "MOUNTED/HOLDERS", "SERIAL/WWN",
    "RIG-WRITABLE",
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


def _yes_no(flag: bool) -> str:
    return "1" if flag else "0"


def _row(d: DeviceInfo) -> tuple[str, ...]:
    usage = ", ".join([*d.mountpoints, *(f"held:{h}" for h in d.holders)]) or "-"
    ident = d.serial or d.wwn or "-"
    writable = "yes" if d.writable_by_rig else f"no: {d.why_not}"
    return (
        d.name, human_size(d.size), str(d.logical_block_size), str(d.physical_block_size),
        _yes_no(d.rotational), _yes_no(d.removable), _yes_no(d.read_only), usage, ident,
        writable,
    )


def format_table(devices: list[DeviceInfo]) -> str:
    """An aligned text table; the last column is not padded."""
    rows = [_HEADERS, *(_row(d) for d in devices)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADERS))]
    lines = []
    for r in rows:
        cells = [
            cell.rjust(w) if head in _RIGHT_ALIGNED else cell.ljust(w)
            for head, cell, w in zip(_HEADERS[:-1], r[:-1], widths[:-1], strict=True)
        ]
        lines.append("  ".join([*cells, r[-1]]))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the device list; returns the exit status."""
    if getattr(args, "device", None):
        from rig.cli.device_detail import show

        return show(args)
    allow = AllowList.from_entries(getattr(args, "allow", None) or [])
    devices = list_block_devices(allow, include_unbound=getattr(args, "all", False))
    if getattr(args, "json", False):
        print(json.dumps([dataclasses.asdict(d) for d in devices], indent=2))
    else:
        print(format_table(devices))
    return 0

