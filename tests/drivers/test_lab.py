"""The lab inventory and its write gate, with loop devices standing in for lab disks.

Every refusal test tries to write after acquiring (reached only if the gate wrongly let the disk
through) and compares the disk's bytes before and after: nothing may change.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rig.drivers.lab import load_inventory, parse_inventory
from rig.drivers.lab.labdisk import Lab
from rig.drivers.lab.lease import Lease, LeaseBusyError
from rig.drivers.lab.signatures import SIGNATURES, scan
from rig.errors import ConfigError, DeviceNotFoundError, UnsafeDeviceError

MiB = 1 << 20


def inventory(tmp_path: Path, body: str, name: str = "lab.toml") -> Path:
    path = tmp_path / name
    path.write_text(f'lease_dir = "leases"\n{textwrap.dedent(body)}')
    return path


def disk(name: str, path: str, **extra: Any) -> str:
    lines = [f'[[disk]]\nname = "{name}"\npath = "{path}"']
    for key, value in extra.items():
        lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else repr(value)}")
    return "\n".join(lines) + "\n"


def digest(dev: Any) -> str:
    with open(dev.backing_file, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def refused(lab: Lab, **kwargs: Any) -> str:
    """The refusal message; the write inside runs only if the gate let the disk through."""
    with pytest.raises(UnsafeDeviceError) as exc, lab.acquire(**kwargs) as got, got.open() as blk:
        blk.pwrite(0, b"\xee" * 4096, fua=True)
    return str(exc.value)


# -- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "message"), [
    ('[[disk]]\nname = "a"\npath = "/dev/sdb"\ndestrucive = true\n',
     "disk 'a': unknown key 'destrucive'"),
    ('[[disk]]\npath = "/dev/sdb"\n', "disk entry 1: missing key 'name'"),
    ('[[disk]]\nname = "a"\nuses = ["x"]\n', "disk 'a': needs an identity: one of wwn"),
    ('[[disk]]\nname = "a"\nserial = "S"\ndestructive = "yes"\n',
     "disk 'a': destructive must be true or false, got 'yes'"),
    ('[[disk]]\nname = "a"\npath = "sdb"\n', "disk 'a': path must be an absolute path"),
    ('[[disk]]\nname = "a"\nwwn = "0x5000c500a1b2c3d4"\nuses = "x"\n',
     "disk 'a': uses must be a list"),
    ('[[disk]]\nname = "a"\nserial = "1"\n[[disk]]\nname = "a"\nserial = "2"\n',
     "disk 'a' is listed twice"),
    ('[[disk]]\nname = "a"\nwwn = "0x5"\n', "disk 'a': wwn '0x5' is not a WWN: give 0x and"),
    ('[[disk]]\nname = "a"\nwwn = "eui.12"\n', "disk 'a': wwn 'eui.12' is not a WWN"),
    ('[[disk]]\nname = "a"\nby_id = "/dev/disk/by-path/x"\n',
     "disk 'a': by_id must be a name in /dev/disk/by-id/ such as wwn-0x5000c500a1b2c3d4, got"),
    ('[[disk]]\nname = "a"\nby_path = "pci 0"\n',
     "disk 'a': by_path must be a name in /dev/disk/by-path/ such as pci-0000:00:1f.2-ata-1"),
    ('[[disk]]\nname = "a"\nserial = "x\\ty"\n', "disk 'a': serial 'x\\ty' holds control"),
    ('disks = []\n', "unknown key 'disks'"),
    ('[[disk]\n', "not valid TOML"),
])
def test_inventory_errors_name_the_entry_and_key(tmp_path: Path, body: str,
                                                 message: str) -> None:
    path = inventory(tmp_path, body)
    with pytest.raises(ConfigError) as exc:
        load_inventory(path)
    assert str(exc.value).startswith(f"{path}: ")
    assert message in str(exc.value)


def test_inventory_parses(tmp_path: Path) -> None:
    inv = parse_inventory(textwrap.dedent("""\
        lease_dir = "locks"
        [[disk]]
        name = "hdd"
        wwn = "0x5000c500a1b2c3d4"
        serial = "Z1D0ABC"
        uses = ["faults"]
        destructive = true
        """), "lab.toml", str(tmp_path))
    (hdd,) = inv.disks
    assert (hdd.wwn, hdd.serial, hdd.uses, hdd.destructive) == (
        "0x5000c500a1b2c3d4", "Z1D0ABC", ("faults",), True)
    assert not hdd.allow_signature and hdd.may_be_used_for("faults")
    assert not hdd.may_be_used_for("bench") and hdd.may_be_used_for(None)
    assert inv.lease_dir == str(tmp_path / "locks")
    with pytest.raises(ConfigError, match="no disk named 'ssd'"):
        inv.entry("ssd")


def test_signatures_are_found_where_they_live() -> None:
    assert scan(bytes(70000)) == []
    for name, offset, magic in SIGNATURES:
        head = bytearray(70000)
        head[offset:offset + len(magic)] = magic
        assert name in [s.name for s in scan(bytes(head))]


# -- loop devices as lab disks --------------------------------------------------------------


@pytest.fixture
def two_disks(tmp_path: Path, rig_loop: Callable[..., Any]) -> tuple[Any, Any, Path]:
    a, b = rig_loop(16 * MiB), rig_loop(16 * MiB)
    return a, b, inventory(tmp_path, disk("a", a.path, destructive=True))


@contextlib.contextmanager
def exclusive_holder(path: str) -> Iterator[None]:
    """Another process holding ``path`` open with O_EXCL (as mkfs, md or a VM would)."""
    code = (f"import os, sys; fd = os.open({path!r}, os.O_RDONLY | os.O_EXCL); "
            "print('held', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.rig_needs("loop")
class TestLoopDisks:
    def test_a_clean_listed_disk_is_written(self, two_disks: tuple[Any, Any, Path]) -> None:
        a, _, path = two_disks
        before = digest(a)
        with Lab(load_inventory(path), allow_destructive=True).acquire(name="a") as got:
            assert got.path == a.path and got.destructive
            with got.open() as blk:
                blk.pwrite(0, b"\xee" * 4096, fua=True)
        assert digest(a) != before  # the control: the refusals below would show a write

    def test_unlisted_device_is_refused(self, two_disks: tuple[Any, Any, Path]) -> None:
        _, b, path = two_disks
        before = digest(b)
        message = refused(Lab(load_inventory(path), allow_destructive=True), device=b.path)
        assert message == (f"refusing {b.path}: it is not in the lab inventory {path} (tests "
                           "get lab devices only from the inventory; add a [[disk]] entry)")
        assert digest(b) == before

    def test_destructive_needs_the_entry_and_the_run(self, tmp_path: Path,
                                                     two_disks: tuple[Any, Any, Path]) -> None:
        a, b, path = two_disks
        before = digest(a)
        assert refused(Lab(load_inventory(path)), name="a").endswith(
            "destructive tests need --rig-allow-destructive")
        ro_inv = inventory(tmp_path, disk("b", b.path), name="ro.toml")
        assert "'b' is not marked destructive = true" in refused(
            Lab(load_inventory(ro_inv), allow_destructive=True), name="b")
        lab = Lab(load_inventory(ro_inv))
        with lab.acquire(name="b", destructive=False) as got, got.open() as blk:
            assert blk.read_only and blk.pread(0, 512) == bytes(512)
        assert digest(a) == before

    def test_signature_bearing_disk_is_refused(self, tmp_path: Path,
                                               rig_loop: Callable[..., Any]) -> None:
        dev = rig_loop(16 * MiB)
        with open(dev.path, "r+b") as f:
            f.seek(1080)
            f.write(b"\x53\xef")  # ext4's magic, nothing else
        before = digest(dev)
        lab = Lab(load_inventory(inventory(tmp_path, disk("x", dev.path, destructive=True))),
                  allow_destructive=True)
        message = refused(lab, name="x")
        assert message.startswith(f"refusing to write to lab disk 'x' ({dev.path}): it holds a "
                                  "known signature: ext2/3/4 (magic 53 ef at byte 1080)")
        assert "set allow_signature = true for disk 'x'" in message
        assert digest(dev) == before
        allowed = inventory(tmp_path, disk("x", dev.path, destructive=True,
                                           allow_signature=True), name="ok.toml")
        Lab(load_inventory(allowed), allow_destructive=True).acquire(name="x").release()

    @pytest.mark.rig_needs("mkfs")
    def test_mounted_disk_is_refused(self, tmp_path: Path,
                                     rig_loop: Callable[..., Any]) -> None:
        dev = rig_loop(32 * MiB)
        subprocess.run(["mkfs.ext4", "-q", "-F", dev.path], check=True, capture_output=True)
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        res = subprocess.run(["mount", "-o", "ro", dev.path, str(mnt)], capture_output=True,
                             text=True)
        if res.returncode:
            pytest.skip(f"cannot mount here: {res.stderr.strip()}")
        try:
            before = digest(dev)
            lab = Lab(load_inventory(inventory(tmp_path, disk(
                "m", dev.path, destructive=True, allow_signature=True))), allow_destructive=True)
            assert refused(lab, name="m") == (f"refusing to write to lab disk 'm' ({dev.path}): "
                                              f"it is mounted at {mnt} (unmount it first)")
            assert digest(dev) == before
            assert f"would refuse to write to {dev.path}: it is mounted at {mnt}" in (
                lab.plan()[0])
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
        assert not os.path.ismount(mnt)

    def test_held_disk_is_refused(self, two_disks: tuple[Any, Any, Path]) -> None:
        a, _, path = two_disks
        before = digest(a)
        lab = Lab(load_inventory(path), allow_destructive=True)
        with exclusive_holder(a.path):
            assert refused(lab, name="a") == (
                f"refusing to write to lab disk 'a' ({a.path}): another program or the kernel "
                "has it open exclusively (stop that user first)")
        assert digest(a) == before

    def test_identity_must_match(self, tmp_path: Path, two_disks: tuple[Any, Any, Path]) -> None:
        a, _, _ = two_disks
        path = inventory(tmp_path, disk("a", a.path, serial="Z1D0ABC", destructive=True),
                         name="id.toml")
        message = refused(Lab(load_inventory(path), allow_destructive=True), name="a")
        assert message == (f"lab disk 'a': serial: expected Z1D0ABC, found none at {a.path} "
                           "(disks renumber: check which disk this is and fix the inventory)")
        gone = inventory(tmp_path, disk("g", "/dev/rig-no-such-disk"), name="gone.toml")
        with pytest.raises(DeviceNotFoundError, match="path /dev/rig-no-such-disk is not a block"):
            Lab(load_inventory(gone)).acquire(name="g", destructive=False)

    def test_leases_exclude_a_second_process(self, two_disks: tuple[Any, Any, Path]) -> None:
        _, _, path = two_disks
        lab = Lab(load_inventory(path), allow_destructive=True)
        with lab.acquire(name="a", owner="first") as got:
            with pytest.raises(LeaseBusyError, match=rf"pid {os.getpid()} .*\(first\)"):
                lab.acquire(name="a")
            code = ("import sys; from rig.drivers.lab.lease import Lease, LeaseBusyError\n"
                    f"try: Lease.acquire({lab.inventory.lease_dir!r}, "
                    f"{got.resolved.lease_key!r})\n"
                    "except LeaseBusyError as e: print(e); sys.exit(3)\n")
            res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            assert res.returncode == 3, res.stderr
            assert f"leased by pid {os.getpid()}" in res.stdout
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr

    def test_lease_waits_for_its_holder(self, tmp_path: Path) -> None:
        first = Lease.acquire(str(tmp_path), "k")
        with pytest.raises(LeaseBusyError):
            Lease.acquire(str(tmp_path), "k", timeout=0.1)
        first.release()
        Lease.acquire(str(tmp_path), "k", timeout=0.1).release()

    def test_dry_run_touches_nothing(self, tmp_path: Path,
                                     two_disks: tuple[Any, Any, Path]) -> None:
        a, _, path = two_disks
        lab = Lab(load_inventory(path), allow_destructive=True)
        (line,) = lab.plan()
        assert line == (f"disk 'a' (path {a.path}): would write to {a.path} (lease "
                        f"dev-{os.major(os.stat(a.path).st_rdev)}:{os.minor(os.stat(a.path).st_rdev)}"
                        f" in {tmp_path / 'leases'})")
        assert not (tmp_path / "leases").exists()
