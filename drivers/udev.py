"""Block device inventory, events and the settle wait, through pyudev and udevadm.

Listing works without a running udevd: pyudev reads sysfs. Identity (WWN, serial, by-id,
ID_PATH, model) comes from :mod:`rig.drivers.identity`: the udev database where there is one,
sysfs otherwise (:data:`rig.drivers.identity.FALLBACK_NOTE` says so).

:func:`settle` is the one wait for udev after the rig changed a device.

Events (:class:`BlockEvents`) come from netlink: the kernel's own uevents need no udevd (a loop
device's medium swap, add and remove; an sr drive's DISK_MEDIA_CHANGE when its events are
polled), and ``source='udev'`` gives them after udev's rules when a udevd runs.
:func:`wait_until_ready` waits for a medium.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rig.drivers.identity import identity_by_number
from rig.drivers.safety import AllowList, usage_by_number, writable_problem
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
    by_id: list[str] = field(default_factory=list)
    """Names under /dev/disk/by-id (udev's DEVLINKS)."""
    by_path: str | None = None
    """udev's ID_PATH."""
    identity_source: str = "sysfs"
    """``udev`` (the udev database) or ``sysfs`` (no database: no by-id, no ID_PATH)."""
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
        model=ident.model,
        by_id=list(ident.by_id),
        by_path=ident.by_path,
        identity_source=ident.source,
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


# --------------------------------------------------------------------------------------------
# Events: media change, add/remove, waiting until a device is ready
# --------------------------------------------------------------------------------------------

UDEV_CONTROL = "/run/udev/control"
#: udevd keeps this file while its event queue is not empty.
UDEV_QUEUE = "/run/udev/queue"
SETTLE_TIMEOUT_S = 30.0


def udevd_running() -> bool:
    """Whether a udevd answers (its control socket exists): then ``source='udev'`` events,
    processed by udev rules, are delivered; without it only the kernel's own uevents are."""
    return os.path.exists(UDEV_CONTROL)


@dataclass(frozen=True)
class BlockEvent:
    """One uevent of a block device."""

    action: str
    """``add``, ``remove``, ``change`` ..."""
    devname: str
    """``/dev/loop3``, ``/dev/sr0``."""
    diskseq: int | None
    media_change: bool
    """The medium changed: ``DISK_MEDIA_CHANGE=1`` (sr's event polling, a loop device's
    detach) or a disk sequence number that moved since the last event of that device (every
    medium change bumps it; LOOP_CHANGE_FD sends a plain ``change`` with the new DISKSEQ)."""
    eject_request: bool
    """``DISK_EJECT_REQUEST=1``: the eject button was pressed."""
    properties: dict[str, str] = field(default_factory=dict)


class BlockEvents:
    """A netlink monitor of block uevents, opened at once (events from then on are kept), for
    the given device paths (all block devices when empty).

    ``source``: ``"kernel"`` (the kernel's uevents, no udevd needed), ``"udev"`` (after udev's
    rules, needs a running udevd) or ``"auto"`` (udev when it runs)."""

    def __init__(self, devices: Iterable[str] = (), *, source: str = "auto") -> None:
        try:
            import pyudev
        except ImportError:
            raise RigError("device events need pyudev: pip install pyudev") from None
        if source == "auto":
            source = "udev" if udevd_running() else "kernel"
        if source == "udev" and not udevd_running():
            raise RigError(f"udev events need a running udevd ({UDEV_CONTROL} is missing)")
        self.source = source
        self.devices = {os.path.realpath(d) for d in devices}
        self._diskseq = {d: _sysfs_diskseq(d) for d in self.devices}
        monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source=source)
        monitor.filter_by("block")
        monitor.start()
        self._monitor: Any = monitor

    def _wanted(self, devname: str) -> bool:
        return not self.devices or devname in self.devices

    def poll(self, timeout: float) -> BlockEvent | None:
        """The next event for our devices within ``timeout`` seconds, or None."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if self._monitor is None:
                raise RigError("the event monitor is closed")
            dev = self._monitor.poll(timeout=left)
            if dev is None:
                return None
            props = {str(k): str(v) for k, v in dev.properties.items()}
            devname = props.get("DEVNAME", "")
            if not devname.startswith("/"):
                devname = f"/dev/{devname}"
            if not self._wanted(devname):
                continue
            text = props.get("DISKSEQ", "")
            seq = int(text) if text.isdigit() else None
            last = self._diskseq.get(devname)
            moved = seq is not None and last is not None and seq != last
            if seq is not None:
                self._diskseq[devname] = seq
            return BlockEvent(str(dev.action), devname, seq,
                              props.get("DISK_MEDIA_CHANGE") == "1" or moved,
                              props.get("DISK_EJECT_REQUEST") == "1", props)

    def wait_for(self, predicate: Callable[[BlockEvent], bool], timeout: float) -> BlockEvent:
        """The first event that satisfies ``predicate``; TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while (left := deadline - time.monotonic()) > 0:
            event = self.poll(left)
            if event is None:
                break
            if predicate(event):
                return event
            seen.append(f"{event.action} {event.devname}")
        raise TimeoutError(f"no matching {self.source} uevent within {timeout:g} s "
                           f"(saw: {', '.join(seen) or 'nothing'})")

    def close(self) -> None:
        """Drop the netlink socket (pyudev closes it with the monitor object)."""
        self._monitor = None

    def __enter__(self) -> BlockEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sysfs_diskseq(path: str) -> int | None:
    try:
        with open(f"/sys/class/block/{os.path.basename(path)}/diskseq") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def medium_size(path: str) -> int:
    """Bytes of the medium in block device ``path`` now (sysfs ``size``; 0: none)."""
    name = os.path.basename(os.path.realpath(path))
    try:
        with open(f"/sys/class/block/{name}/size") as f:
            return int(f.read()) * 512
    except (OSError, ValueError):
        return 0


def wait_until_ready(path: str, timeout: float = 10.0, *, poll_interval: float = 0.5) -> int:
    """Wait until block device ``path`` has a medium (a size above 0) and opens for reading;
    return its size. Woken by its uevents, and checks every ``poll_interval`` s too (a drive
    whose kernel does not poll for media sends no event). Where a udevd runs, it then waits for
    udev to take in the new medium (:func:`settle`, within what is left of ``timeout``).
    TimeoutError names what was missing."""
    deadline = time.monotonic() + timeout
    with BlockEvents([path], source="kernel") as events:
        while True:
            try:  # an open makes a removable disk (sr, sd) check its medium and size again
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                fd = -1
            else:
                os.close(fd)
            size = medium_size(path)
            if size and fd >= 0:
                settle(path, max(deadline - time.monotonic(), 1.0))
                return size
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{path} has no medium after {timeout:g} s")
            events.poll(min(left, poll_interval))


def settle(what: str, timeout: float = SETTLE_TIMEOUT_S, *, changed: str | None = None,
           sent: bool = False) -> None:
    """Wait until udev has handled every event so far, so what is read next (the udev
    database, /dev/disk links) is the device as it is now. Call it after the rig changed a
    device: attached it, changed its medium, or let a test write to it (a partition table).

    ``changed``: a block device path to send a ``change`` uevent for first (what udev's own
    watch does when a disk opened for writing is closed), so its properties are read again;
    then ``udevadm settle`` makes sure udevd has taken in every event sent so far. Without
    ``changed`` (nothing was just changed by the rig), an empty queue (no
    :data:`UDEV_QUEUE`) is enough and costs no process. ``sent``: the kernel has just sent
    events of its own (a loop device bound, a medium swapped), which udevd may not have queued
    yet, so ``udevadm settle`` runs anyway (it asks udevd to take in every event sent before it
    looks at the queue). ``what`` names the device in the
    error. Without a udevd this returns at once: nothing processes events, and identity then
    comes from sysfs, which is always current.
    Raises RigError (one line: the device, the timeout) when udev does not settle in time.
    """
    if not udevd_running() or (changed is None and not sent and not os.path.exists(UDEV_QUEUE)):
        return
    if changed is not None:
        name = os.path.basename(os.path.realpath(changed))
        try:
            with open(f"/sys/class/block/{name}/uevent", "w") as f:
                f.write("change")
        except OSError:
            pass  # gone or not a block device: settling is still right
    deadline = time.monotonic() + timeout
    udevadm = shutil.which("udevadm")
    if udevadm is not None:
        # udevadm ignores requests when it thinks it runs in a chroot (the VM lab's guest is
        # one, with its own udevd); the request is ours, so it is meant.
        env = {**os.environ, "SYSTEMD_IGNORE_CHROOT": "1"}
        try:
            done = subprocess.run(
                [udevadm, "settle", f"--timeout={max(1, math.ceil(timeout))}"], env=env,
                stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout + 5,
            ).returncode == 0
        except subprocess.TimeoutExpired:
            done = False
    else:
        while (done := not os.path.exists(UDEV_QUEUE)) is False and time.monotonic() < deadline:
            time.sleep(0.05)
    if not done:
        raise RigError(f"{what}: udev did not settle within {timeout:g} s (its event queue "
                       "is stuck: look at 'udevadm monitor' and the udevd log)")
