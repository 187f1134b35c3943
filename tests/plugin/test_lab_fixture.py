"""``rig_lab_disk`` with loop devices standing in for lab disks: destructive only when the run and
the inventory allow it, refusals fail the test with the reason and write nothing, a dry run
shows what would be touched, and the lease is released after the test."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rig.drivers.lab import load_inventory, resolve
from rig.drivers.lab.lease import Lease

pytestmark = pytest.mark.rig_needs("loop")
MiB = 1 << 20

WRITER = """
def test_write(rig_lab_disk):
    disk = rig_lab_disk("scratch")
    with disk.open(cache="none") as blk:
        blk.pwrite(0, b"\\xa5" * 4096, fua=True)
        assert blk.pread(0, 4096) == b"\\xa5" * 4096

def test_read_only(rig_lab_disk):
    disk = rig_lab_disk("scratch", destructive=False)
    with disk.open() as blk:
        assert blk.read_only
"""


def digest(dev: Any) -> str:
    with open(dev.backing_file, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def head(dev: Any) -> bytes:
    with open(dev.backing_file, "rb") as f:
        return f.read(4096)


def lab_file(pytester: pytest.Pytester, dev: Any, **extra: str) -> Path:
    lines = ['[[disk]]', 'name = "bench-disk"', f'path = "{dev.path}"', 'uses = ["scratch"]',
             'destructive = true', *(f"{k} = {v}" for k, v in extra.items())]
    return pytester.makefile(".toml", lab='lease_dir = "leases"\n' + "\n".join(lines))


def test_writes_only_with_allow_destructive(pytester: pytest.Pytester,
                                            rig_loop: Callable[..., Any]) -> None:
    dev = rig_loop(16 * MiB)
    lab = lab_file(pytester, dev)
    pytester.makepyfile(WRITER)
    result = pytester.runpytest("--rig-lab", str(lab), "-rs", "-p", "no:randomly")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines([
        f"rig: lab {lab}: 1 disk(s), no destructive writes, leases in *leases",
        "*= blockrig =*",
        "skipped by rig fixtures:",
        "  1 test(s): destructive lab test: run with --rig-allow-destructive to let tests "
        "write to lab disks marked destructive = true",
        "SKIPPED * destructive lab test: run with --rig-allow-destructive*",
    ])
    assert not any(head(dev))

    result = pytester.runpytest("--rig-lab", str(lab), "--rig-allow-destructive")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*= blockrig =*", "real hardware: 2 test(s)", "  lab disk: 2 test(s)",
        f"    test_writes_only_with_allow_destructive.py::test_read_only: bench-disk {dev.path} "
        "(read-only)",
        f"    test_writes_only_with_allow_destructive.py::test_write: bench-disk {dev.path} "
        "(read-write)",
    ])
    assert head(dev) == b"\xa5" * 4096
    inventory = load_inventory(lab)
    Lease.acquire(inventory.lease_dir, resolve(inventory.disks[0]).lease_key).release()


@pytest.mark.rig_needs("mkfs")
def test_a_mounted_lab_disk_fails_the_test_and_is_not_written(
        pytester: pytest.Pytester, rig_loop: Callable[..., Any]) -> None:
    dev = rig_loop(32 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", dev.path], check=True, capture_output=True)
    mnt = pytester.mkdir("mnt")
    res = subprocess.run(["mount", "-o", "ro", dev.path, str(mnt)], capture_output=True,
                         text=True)
    if res.returncode:
        pytest.skip(f"cannot mount here: {res.stderr.strip()}")
    try:
        before = digest(dev)
        lab = lab_file(pytester, dev, allow_signature="true")
        pytester.makepyfile(WRITER)
        result = pytester.runpytest("--rig-lab", str(lab), "--rig-allow-destructive", "-k",
                                    "test_write")
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines([f"*refusing to write to lab disk 'bench-disk' "
                                     f"({dev.path}): it is mounted at {mnt} (unmount it first)"])
        assert digest(dev) == before
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_dry_run_shows_what_would_be_touched(pytester: pytest.Pytester,
                                             rig_loop: Callable[..., Any]) -> None:
    dev, marked = rig_loop(16 * MiB), rig_loop(16 * MiB)
    with open(marked.path, "r+b") as f:
        f.write(b"XFSB")
    lab = pytester.makefile(".toml", lab=f"""
        lease_dir = "leases"
        [[disk]]
        name = "clean"
        path = "{dev.path}"
        destructive = true
        [[disk]]
        name = "xfs"
        path = "{marked.path}"
        destructive = true
    """.replace("\n        ", "\n"))
    before = digest(dev), digest(marked)
    pytester.makepyfile(WRITER)
    result = pytester.runpytest("--rig-lab", str(lab), "--rig-allow-destructive",
                                "--rig-dry-run", "-k", "test_write")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([
        "rig: dry run: nothing is written; what the lab disks would see:",
        f"rig:   disk 'clean' (path {dev.path}): would write to {dev.path} (lease dev-*",
        f"rig:   disk 'xfs' (path {marked.path}): would refuse to write to {marked.path}: it "
        "holds a known signature: xfs (magic 'XFSB' at byte 0)*",
        "dry run (--rig-dry-run), what the tests would have touched:",
        "  test_dry_run_shows_what_would_be_touched.py::test_write: disk 'clean' *",
    ])
    assert (digest(dev), digest(marked)) == before
    assert not (pytester.path / "leases").exists()
