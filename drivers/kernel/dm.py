"""Device-mapper test targets through ``dmsetup``: dm-flakey and dm-delay over a block device.

For side-by-side checks of the rig's fault injector against the kernel's. They need root, the
dm modules and dmsetup (the VM lab's guest has them; this project's CI host has no
device-mapper). ``DM_DISABLE_UDEV=1`` makes dmsetup create ``/dev/mapper/NAME`` itself, which is
what works without udev (the VM lab) and is harmless with it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator, Sequence

from rig.errors import RigError

_ENV = {**os.environ, "DM_DISABLE_UDEV": "1"}


def _dmsetup(*args: str, stdin: str | None = None) -> str:
    try:
        r = subprocess.run(["dmsetup", *args], input=stdin, capture_output=True, text=True,
                           env=_ENV, timeout=60)
    except FileNotFoundError:
        raise RigError("dmsetup not found (apt-get install dmsetup)") from None
    if r.returncode != 0:
        raise RigError(f"dmsetup {' '.join(args)}: {r.stderr.strip() or 'failed'}")
    return r.stdout


def sectors(device: str) -> int:
    """Size of ``device`` in 512-byte sectors."""
    fd = os.open(device, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END) // 512
    finally:
        os.close(fd)


@contextlib.contextmanager
def target(name: str, table: str) -> Iterator[str]:
    """Create ``/dev/mapper/NAME`` from a one-line ``table``; remove it afterwards."""
    _dmsetup("create", name, "--table", table)
    path = f"/dev/mapper/{name}"
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise RigError(f"{path} did not appear (is udev needed here?)")
            time.sleep(0.05)
        yield path
    finally:
        for _ in range(50):
            try:
                _dmsetup("remove", name)
                break
            except RigError:
                time.sleep(0.1)
        else:
            _dmsetup("remove", "--force", name)


def flakey(name: str, device: str, *, up: int, down: int,
           features: Sequence[str] = ()) -> contextlib.AbstractContextManager[str]:
    """dm-flakey over all of ``device``: ``up`` seconds working, then ``down`` seconds failing
    (all I/O fails with EIO, or what ``features`` say: ``error_writes``, ``drop_writes``,
    ``corrupt_bio_byte N r|w VALUE FLAGS`` as separate words), repeating from table load."""
    words = " ".join(features)
    feats = f" {len(features)} {words}" if features else ""
    return target(name, f"0 {sectors(device)} flakey {device} 0 {up} {down}{feats}")


def delay(name: str, device: str, *, ms: int) -> contextlib.AbstractContextManager[str]:
    """dm-delay over all of ``device``: every request waits ``ms`` milliseconds."""
    return target(name, f"0 {sectors(device)} delay {device} 0 {ms}")
