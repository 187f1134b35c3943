"""Block device inventory through pyudev.

pyudev reads sysfs, so listing works without a running udevd (then there are no ID_* properties,
which is why serial and WWN come from sysfs too, the same way the safety check reads them).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from rig.drivers.safety import (
    AllowList,
    identity_by_number,
    usage_by_number,
    writable_problem,
)
from rig.errors import RigError

LOOP_MAJOR = 7


@dataclass
class DeviceInfo:
    """One whole disk as the rig sees it. Sizes are in bytes."""

    name: str
    path: str
    size: int
    logical_block_size: int
    physical_block_size: int
    rotational: bool
    removable: bool
    read_only: bool
    mountpoints: list[str] = field(default_factory=list)
    holders: list[str] = field(default_factory=list)
    serial: str | None = None
    wwn: str | None = None
    model: str | None = None
    loop_backing_file: str | None = None
    writable_by_rig: bool = False
    why_not: str = ""
    """Empty when writable_by_rig, else the reason and the fix."""


def _attr(dev: Any, name: str) -> str | None:
    try:
        value = dev.attributes.get(name)
    except (OSError, KeyError, ValueError):
        return None
    if value is None:
        return None
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return text.strip() or None


def _attr_int(dev: Any, name: str) -> int:
    value = _attr(dev, name)
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _info(dev: Any, allow: AllowList | None, backing_file: str | None) -> DeviceInfo:
    name = str(dev.sys_name)
    path = str(dev.device_node or f"/dev/{name}")
    number = (os.major(dev.device_number), os.minor(dev.device_number))
    ident = identity_by_number(number)
    usage = usage_by_number(number)
    if os.path.exists(path):
        why_not = writable_problem(path, allow) or ""
    else:
        why_not = f"there is no device node {path} (is devtmpfs mounted on /dev?)"
    return DeviceInfo(
        name=name,
        path=path,
        size=_attr_int(dev, "size") * 512,
        logical_block_size=_attr_int(dev, "queue/logical_block_size"),
        physical_block_size=_attr_int(dev, "queue/physical_block_size"),
        rotational=_attr(dev, "queue/rotational") == "1",
        removable=_attr(dev, "removable") == "1",
        read_only=_attr(dev, "ro") == "1",
        mountpoints=usage.mountpoints,
        holders=usage.holder_names,
        serial=ident.serial,
        wwn=ident.wwn,
        model=_attr(dev, "device/model"),
        loop_backing_file=backing_file,
        writable_by_rig=not why_not,
        why_not=why_not,
    )


def list_block_devices(
    allow: AllowList | None = None, *, include_unbound: bool = False
) -> list[DeviceInfo]:
    """Every whole disk (no partitions), naturally sorted by name.

    Loop devices with no backing file are skipped unless ``include_unbound``. ``allow`` adds to
    ``RIG_ALLOW_DEVICES`` when deciding ``writable_by_rig``.
    """
    try:
        import pyudev
    except ImportError:
        raise RigError("listing devices needs pyudev: pip install pyudev") from None
    result = []
    for dev in pyudev.Context().list_devices(subsystem="block", DEVTYPE="disk"):
        backing_file = _attr(dev, "loop/backing_file")
        if (
            not include_unbound
            and os.major(dev.device_number) == LOOP_MAJOR
            and backing_file is None
        ):
            continue
        result.append(_info(dev, allow, backing_file))
    result.sort(key=lambda d: _natural_key(d.name))
    return result
