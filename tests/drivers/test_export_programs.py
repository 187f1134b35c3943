"""Real programs on an export of a ``faults`` filter over a scratch image: ext4 reacts to write
errors as on a failing disk (errors=remount-ro) and e2fsck runs afterwards; sqlite reports a disk
I/O error and its database passes ``PRAGMA integrity_check`` once the fault is cleared; fio's
crc32c verification passes with no rules. Rules are armed and disarmed live (``add_rule``)."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import rig
from rig.drivers.export import Export, export, fuse_mounts
from rig.drivers.loop import loops_for_backing_file
from rig.faults import Error, Rule
from rig.filters.faults import FaultsFilter, find_faults

pytestmark = pytest.mark.rig_needs("loop", "fuse", "mkfs")

SIZE = 64 << 20


@dataclass
class Rig:
    ex: Export
    faults: FaultsFilter
    mnt: Path


def _mount_opts(mnt: Path) -> list[str] | None:
    """The options of the (top) mount on ``mnt`` in /proc/self/mountinfo, per-mount and
    per-superblock together, or None if nothing is mounted there."""
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4].replace("\\040", " ") == str(mnt):
                found = fields[5].split(",") + fields[-1].split(",")
    return found


def _run(*cmd: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)
    assert r.returncode in ok, f"{cmd}: rc {r.returncode}: {r.stdout}{r.stderr}"
    return r


def _mount(dev: str, mnt: Path) -> None:
    _run("mount", "-t", "ext4", "-o", "errors=remount-ro", dev, str(mnt))


def _umount(mnt: Path) -> None:
    """Unmount ``mnt`` (all stacked mounts); lazily as a last resort."""
    for _ in range(20):
        if _mount_opts(mnt) is None:
            return
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            time.sleep(0.05)
    while _mount_opts(mnt) is not None:
        if subprocess.run(["umount", "-l", str(mnt)], capture_output=True).returncode != 0:
            break


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[Rig]:
    """A 64 MiB scratch image under a faults filter (no rules), exported, with a mountpoint.

    The file system is always unmounted before the export's teardown runs; afterwards nothing is
    left: no mount on the mountpoint, no loop device on the FUSE file, no FUSE mount.
    """
    img = tmp_path / "disk.img"
    img.write_bytes(b"")
    os.truncate(img, SIZE)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    blk = rig.open({"driver": "faults", "file": {"driver": "file", "filename": str(img)}})
    try:
        with export(blk) as ex:
            try:
                yield Rig(ex, find_faults(blk.root), mnt)
            finally:
                _umount(mnt)
    finally:
        blk.close()
    assert _mount_opts(mnt) is None
    assert loops_for_backing_file(ex.file) == []
    assert fuse_mounts(ex.mountpoint) == []
    assert not os.path.exists(ex.mountpoint)


def _mkfs(dev: str) -> None:
    _run("mkfs.ext4", "-q", "-F", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", dev)


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def test_ext4_goes_read_only_on_write_errors_and_fsck_repairs_it(faulty: Rig) -> None:
    dev, mnt = faulty.ex.path, faulty.mnt
    _mkfs(dev)
    _mount(dev, mnt)
    before = {f"before{i}": os.urandom(8192 + i) for i in range(5)}
    for name, data in before.items():
        _write_file(mnt / name, data)
    os.sync()
    assert "rw" in (_mount_opts(mnt) or [])

    faulty.faults.add_rule(Rule(Error(errno.EIO), op="write", name="dead-writes"))
    with pytest.raises(OSError) as e:
        _write_file(mnt / "during", os.urandom(65536))
    assert e.value.errno == errno.EIO
    os.sync()  # the journal commit fails too: jbd2 aborts the journal
    assert faulty.faults.counters()["dead-writes"] > 0
    # The next handle sees the aborted journal: ext4_error, then errors=remount-ro. Kernel 6.18
    # shows it as the superblock option "emergency_ro" (older kernels: "ro"), the mount stays rw.
    with pytest.raises(OSError) as e:
        _write_file(mnt / "after", b"x")
    assert e.value.errno == errno.EROFS
    opts = _mount_opts(mnt) or []
    assert "ro" in opts or "emergency_ro" in opts, opts

    faulty.faults.remove_rule("dead-writes")
    _umount(mnt)
    # e2fsck: 0 clean, 1 errors fixed; 4 (left uncorrected) and up would be a failure.
    _run("e2fsck", "-fy", dev, ok=(0, 1))
    _run("e2fsck", "-fn", dev)  # and now it is clean
    _mount(dev, mnt)
    for name, data in before.items():
        assert (mnt / name).read_bytes() == data
    assert "rw" in (_mount_opts(mnt) or [])


def test_sqlite_reports_disk_io_error_and_stays_consistent(faulty: Rig) -> None:
    dev, mnt = faulty.ex.path, faulty.mnt
    _mkfs(dev)
    _mount(dev, mnt)
    db = mnt / "t.db"
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=DELETE")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        for i in range(100):
            con.execute("BEGIN")
            con.execute("INSERT INTO t VALUES (?, ?)", (i, os.urandom(512)))
            con.execute("COMMIT")
        committed = con.execute("SELECT id, v FROM t ORDER BY id").fetchall()

        faulty.faults.add_rule(Rule(Error(errno.EIO), op="write", name="dead-writes"))
        with pytest.raises(sqlite3.DatabaseError, match="disk I/O error") as e:
            con.execute("BEGIN")
            con.execute("INSERT INTO t VALUES (?, ?)", (1000, os.urandom(65536)))
            con.execute("COMMIT")
        # With synchronous=FULL the commit's fsync is where the error surfaces.
        assert e.value.sqlite_errorname.startswith("SQLITE_IOERR")
        assert faulty.faults.counters()["dead-writes"] > 0
    finally:
        con.close()

    faulty.faults.remove_rule("dead-writes")
    _umount(mnt)
    _run("e2fsck", "-fy", dev, ok=(0, 1))
    _mount(dev, mnt)
    con = sqlite3.connect(db, isolation_level=None)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = con.execute("SELECT id, v FROM t ORDER BY id").fetchall()
    finally:
        con.close()
    assert rows == committed  # every committed row, and not the failed one


@pytest.mark.rig_needs("fio")
def test_fio_crc32c_verify_passes_with_no_rules(faulty: Rig) -> None:
    r = _run("fio", "--name=verify", f"--filename={faulty.ex.path}", "--rw=randwrite",
             "--bs=4k", "--size=16M", "--direct=1", "--ioengine=libaio", "--iodepth=8",
             "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--randrepeat=0",
             "--verify_state_save=0",  # else fio leaves local-verify-*.state in the cwd
             "--output-format=json")
    job = json.loads(r.stdout[r.stdout.index("{"):])["jobs"][0]
    assert job["error"] == 0
    assert job["write"]["io_bytes"] == 16 << 20
    assert job["read"]["io_bytes"] == 16 << 20  # the verify pass read everything back
    assert faulty.faults.counters() == {}
