"""Kernel test devices made by loading a module: scsi_debug disks and null_blk devices.

Both need root and a kernel that has the modules (not this project's CI host: it runs them in the
VM lab, ``docs/vm-lab.md``). Each context manager loads the module with the given parameters,
waits for the block device to appear, yields its path, and unloads the module afterwards, so
the next test can load it with other parameters (a 4096-byte scsi_debug after a 512-byte one).

With no udev running (the VM lab's guest), the kernel's devtmpfs still creates the device nodes.
"""

from __future__ import annotations

import contextlib
import glob
import os
import subprocess
import time
from collections.abc import Callable, Iterator

from rig.errors import RigError

SETTLE_TIMEOUT = 20.0
_MODPROBE_HOW = "needs root and a kernel with the module (on a CI host: use the VM lab, rig vm run)"


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise RigError(f"{argv[0]} not found (apt-get install kmod)") from None


def module_loaded(name: str) -> bool:
    return os.path.isdir(f"/sys/module/{name.replace('-', '_')}")


def modprobe(name: str, **params: int | str) -> None:
    """Load ``name`` with ``key=value`` parameters; a RigError names the module and the reason."""
    args = [f"{k}={v}" for k, v in params.items()]
    r = _run(["modprobe", name, *args])
    if r.returncode != 0:
        why = (r.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise RigError(f"modprobe {name} {' '.join(args)}: {why} ({_MODPROBE_HOW})".replace(
            "  ", " "))


def rmmod(name: str, timeout: float = 10.0) -> None:
    """Unload ``name``, retrying while it is busy (a device still closing)."""
    deadline = time.monotonic() + timeout
    while module_loaded(name):
        r = _run(["modprobe", "-r", name])
        if r.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RigError(f"modprobe -r {name}: {r.stderr.strip() or 'failed'} "
                           "(is a device of it still open or mounted?)")
        time.sleep(0.1)


def _wait_for(find: Callable[[], str | None], what: str) -> str:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        found = find()
        if found and os.path.exists(found):
            return found
        time.sleep(0.05)
    raise RigError(f"{what} did not appear within {SETTLE_TIMEOUT:.0f} s")


def scsi_debug_disks() -> list[str]:
    """``/dev/sdX`` of every scsi_debug disk, sorted."""
    found = []
    for model in glob.glob("/sys/block/sd*/device/model"):
        with contextlib.suppress(OSError), open(model) as f:
            if f.read().strip() == "scsi_debug":
                found.append("/dev/" + model.split("/")[3])
    return sorted(found)


@contextlib.contextmanager
def scsi_debug(*, sector_size: int = 512, dev_size_mb: int = 16,
               **params: int | str) -> Iterator[str]:
    """One scsi_debug disk (``/dev/sdX``) of ``dev_size_mb`` MiB and ``sector_size`` bytes.

    Extra ``params`` go to modprobe (e.g. ``lbpu=1`` for UNMAP, ``opt_blks``, ``every_nth``).
    """
    if module_loaded("scsi_debug"):
        raise RigError("scsi_debug is loaded already (by another test or user); unload it "
                       "first: modprobe -r scsi_debug")
    modprobe("scsi_debug", sector_size=sector_size, dev_size_mb=dev_size_mb, **params)
    try:
        yield _wait_for(lambda: next(iter(scsi_debug_disks()), None), "the scsi_debug disk")
    finally:
        rmmod("scsi_debug")


@contextlib.contextmanager
def null_blk(*, size_gb: int = 1, block_size: int = 512, memory_backed: bool = True,
             **params: int | str) -> Iterator[str]:
    """``/dev/nullb0`` of ``size_gb`` GiB (module parameters size it in whole GiB):
    memory-backed by default, so what is written reads back (memory is used only as written)."""
    if module_loaded("null_blk"):
        raise RigError("null_blk is loaded already; unload it first: modprobe -r null_blk")
    modprobe("null_blk", nr_devices=1, gb=size_gb, bs=block_size,
             memory_backed=int(memory_backed), **params)
    try:
        yield _wait_for(lambda: "/dev/nullb0", "/dev/nullb0")
    finally:
        rmmod("null_blk")
