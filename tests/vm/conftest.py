"""Real guests for the VM lab tests. Booting is CPU-bound under TCG, so boots take a file lock
(under ``pytest -n 2`` the other worker waits instead of halving both boots), the checks that
can share a guest share one per worker (``lab``), and guests get one CPU (:data:`SMP`): TCG then
keeps one host core busy, not both, leaving the other to the other worker's (timing) tests. One
vCPU boots no slower here (3.3-4.5 s against 3.4-7.6 s for two, on a loaded 2-core host)."""

from __future__ import annotations

import contextlib
import fcntl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rig.drivers.vm.machine import Guest

CD_ONE = b"MEDIA-ONE"
CD_TWO = b"MEDIA-TWO"
DISK_SIZE = 64 << 20
SMP = 1
SCSI_DEBUG_MB = 16


@contextlib.contextmanager
def boot_lock() -> Iterator[None]:
    """Held while a guest boots: one boot at a time on this machine."""
    with open(Path(tempfile.gettempdir()) / "blockrig-vm-tests.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def booted(guest: Guest, timeout: float = 120.0) -> Guest:
    with boot_lock():
        guest.boot()
        try:
            guest.wait_ready(timeout)
        except BaseException:
            guest.close()
            raise
    return guest


def cd_image(path: Path, label: bytes) -> Path:
    """A 512 KiB raw CD image whose first sector starts with ``label``."""
    path.write_bytes(label.ljust(2048, b"\0") * 256)
    return path


@pytest.fixture(scope="session")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("vmlab")
    cd_image(d / "cd1.raw", CD_ONE)
    cd_image(d / "cd2.raw", CD_TWO)
    (d / "share").mkdir()
    return d


@pytest.fixture(scope="session")
def lab(lab_dir: Path) -> Iterator[Guest]:
    """One guest per worker: a 64 MiB disk, a CD-ROM, scsi_debug with 4096-byte sectors,
    null_blk, dm-flakey and a writable share. (Tests using it are marked ``needs("vm")``, which
    skips them before this fixture runs.)"""
    guest = Guest(
        disks=[f"{DISK_SIZE >> 20}M"], cdrom=lab_dir / "cd1.raw",
        scsi_debug=f"sector_size=4096 dev_size_mb={SCSI_DEBUG_MB}", null_blk="",
        modules=["dm_flakey"], shares=[lab_dir / "share"], smp=SMP,
    )
    booted(guest)
    try:
        yield guest
    finally:
        guest.close()
