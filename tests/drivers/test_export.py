"""Exports (FUSE file + loop device) under real programs: dd sees injected faults, a failure in
the middle of a 1 MiB write is never lost, fsync reaches the graph, errnos pass through, and
nothing (loop device, FUSE mount, mountpoint) is left behind, also after SIGKILL."""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import rig
from rig.drivers.export.device import (
    PREFIX,
    Export,
    _watcher_pids,
    export,
    fuse_mounts,
    sweep_stale,
)
from rig.drivers.loop import loops_for_backing_file

pytestmark = pytest.mark.rig_needs("loop", "fuse")

BAD = 400 * 1024  # the injected 4 KiB range starts here
RULE = """
[[rules]]
action = "error"
op = "{op}"
{range}
errno = "{errno}"
"""


def _prefix() -> str:
    return os.path.join(tempfile.gettempdir(), PREFIX)


def _assert_nothing_left(ex: Export) -> None:
    assert loops_for_backing_file(ex.file) == []
    assert fuse_mounts(ex.mountpoint) == []
    assert not os.path.exists(ex.mountpoint)
    assert _watcher_pids(ex.mountpoint) == []  # no fusermount3 auto_unmount watcher left


@pytest.fixture
def exported(tmp_path: Path) -> Iterator[Callable[..., Export]]:
    """``exported(op=..., errno=...)``: a 4 MiB export with one 4 KiB fault at BAD (or none)."""
    made: list[Export] = []
    closers: list[Any] = []

    def make(op: str | None = None, errno: str = "EIO", start: int = BAD,
             max_write: int = 0) -> Export:
        img = tmp_path / f"disk{len(made)}.img"
        img.write_bytes(b"")
        os.truncate(img, 4 << 20)
        leaf = {"driver": "file", "filename": str(img)}
        spec: dict[str, Any] = leaf
        if op is not None:
            rules = tmp_path / f"rules{len(made)}.toml"
            where = "" if op == "flush" else f"start = {start}\nend = {start + 4096}"
            rules.write_text(RULE.format(op=op, range=where, errno=errno))
            spec = {"driver": "faults", "rules": str(rules), "file": leaf}
        blk = rig.open(spec)
        ctx = export(blk, max_write=max_write)
        ex = ctx.__enter__()
        closers.append((ctx, blk))
        made.append(ex)
        return ex

    yield make
    for ctx, blk in reversed(closers):
        ctx.__exit__(None, None, None)
        blk.close()
    for ex in made:
        _assert_nothing_left(ex)


def dd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["dd", *args], capture_output=True, text=True, timeout=60)


def test_device_is_configured_never_to_lose_a_write_error(exported: Callable[..., Export]) -> None:
    ex = exported()
    name = os.path.basename(ex.path)
    assert ex.max_write == 1 << 20  # libfuse3 negotiates 1 MiB requests
    assert Path(f"/sys/block/{name}/loop/dio").read_text().strip() == "1"
    kb = int(Path(f"/sys/block/{name}/queue/max_sectors_kb").read_text())
    assert kb * 1024 <= ex.max_write
    assert ex.mountpoint in fuse_mounts(_prefix())


def test_direct_read_of_injected_range_fails_and_neighbour_reads(
        exported: Callable[..., Export]) -> None:
    ex = exported(op="read")
    bad = dd(f"if={ex.path}", "of=/dev/null", "bs=4k", "count=1", f"skip={BAD // 4096}",
             "iflag=direct")
    assert bad.returncode == 1 and "Input/output error" in bad.stderr
    good = dd(f"if={ex.path}", "of=/dev/null", "bs=4k", "count=1", f"skip={BAD // 4096 + 1}",
              "iflag=direct")
    assert good.returncode == 0, good.stderr


def test_direct_write_of_injected_range_fails_and_neighbour_writes(
        exported: Callable[..., Export]) -> None:
    ex = exported(op="write")
    bad = dd("if=/dev/zero", f"of={ex.path}", "bs=4k", "count=1", f"seek={BAD // 4096}",
             "oflag=direct")
    assert bad.returncode == 1 and "Input/output error" in bad.stderr
    good = dd("if=/dev/zero", f"of={ex.path}", "bs=4k", "count=1", f"seek={BAD // 4096 - 1}",
              "oflag=direct")
    assert good.returncode == 0, good.stderr


def test_failure_in_the_middle_of_a_1mib_write_reaches_the_writer(
        exported: Callable[..., Export]) -> None:
    """Trap 1 of the host facts: a split write failing after its first chunk must not be
    acknowledged. The bad 4 KiB is 400 KiB into the 1 MiB write."""
    ex = exported(op="write")
    r = dd("if=/dev/urandom", f"of={ex.path}", "bs=1M", "count=1", "oflag=direct")
    assert r.returncode == 1 and "Input/output error" in r.stderr
    fd = os.open(ex.path, os.O_WRONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 1 << 20)  # page-aligned, as O_DIRECT wants
    try:
        with pytest.raises(OSError) as e:
            os.pwritev(fd, [buf], 0)
        assert e.value.errno == 5
    finally:
        os.close(fd)
        buf.close()


def test_failed_chunk_of_a_split_request_is_not_lost(exported: Callable[..., Export]) -> None:
    """With FUSE max_write lowered to 64 KiB, a 512 KiB write would be split into 8 FUSE WRITEs
    and, without the max_sectors_kb cap (and loop dio), acknowledged although its 7th chunk
    failed (the reference's test_asyncdio case). The export caps the queue, so it fails."""
    ex = exported(op="write", max_write=64 << 10)
    assert ex.max_write == 64 << 10
    name = os.path.basename(ex.path)
    assert int(Path(f"/sys/block/{name}/queue/max_sectors_kb").read_text()) == 64
    r = dd("if=/dev/urandom", f"of={ex.path}", "bs=512k", "count=1", "oflag=direct")
    assert r.returncode == 1 and "Input/output error" in r.stderr


def test_fsync_on_the_device_reaches_the_graph_as_a_flush(
        exported: Callable[..., Export]) -> None:
    ok = exported()
    before = ok.operations.fsync_count
    fd = os.open(ok.path, os.O_WRONLY)
    try:
        os.pwrite(fd, b"x" * 4096, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    assert ok.operations.fsync_count > before
    failing = exported(op="flush")
    r = dd("if=/dev/zero", f"of={failing.path}", "bs=4k", "count=1", "conv=fsync")
    assert r.returncode == 1 and "fsync failed" in r.stderr


def test_enospc_passes_through_to_the_program(exported: Callable[..., Export]) -> None:
    ex = exported(op="write", errno="ENOSPC")
    r = dd("if=/dev/zero", f"of={ex.path}", "bs=4k", "count=1", f"seek={BAD // 4096}",
           "oflag=direct")
    assert r.returncode == 1 and "No space left on device" in r.stderr


def test_rig_run_end_to_end(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    where = f"start = {BAD}\nend = {BAD + 4096}"
    rules.write_text(RULE.format(op="write", range=where, errno="EIO"))
    script = (f'dd if=/dev/zero of=$RIG_DEV bs=4k count=1 seek={BAD // 4096 + 1} oflag=direct '
              f'&& dd if=/dev/zero of=$RIG_DEV bs=4k count=1 seek={BAD // 4096} oflag=direct')
    # A private TMPDIR: the run's mountpoint and scratch image go there, so the check below
    # cannot see another xdist worker's exports.
    private = tmp_path / "tmp"
    private.mkdir()
    r = subprocess.run([sys.executable, "-m", "rig.cli.main", "run", "--faults", str(rules),
                        "--size", "16M", "--", "sh", "-c", script],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "TMPDIR": str(private)})
    assert r.returncode == 1, r.stderr  # the second dd's status
    assert r.stderr.count("Input/output error") == 1
    assert fuse_mounts(os.path.join(str(private), PREFIX)) == []
    assert list(private.iterdir()) == []  # mountpoint and scratch image removed
    ok = subprocess.run([sys.executable, "-m", "rig.cli.main", "run", "--size", "1M", "--",
                         "sh", "-c", 'test -b "$RIG_DEV"'], capture_output=True, timeout=60)
    assert ok.returncode == 0


def test_rig_run_rejects_bad_input_in_one_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "rig.cli.main", "run", "--size", "16M"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "no command" in r.stderr


_KILLED_CHILD = textwrap.dedent("""
    import os, sys, time
    import rig
    from rig.drivers.export import export
    img = sys.argv[1]
    os.truncate(img, 4 << 20)
    with rig.open({"driver": "file", "filename": img}) as blk, export(blk) as ex:
        print(ex.path, ex.mountpoint, ex.file, flush=True)
        time.sleep(600)
""")


def test_sigkilled_exporter_leaves_no_loop_and_no_mount(tmp_path: Path) -> None:
    img = tmp_path / "killed.img"
    img.write_bytes(b"")
    # The child's mountpoint goes under tmp_path, so another worker's export (whose sweeper
    # looks at the shared temp dir) cannot remove it before this test looks.
    private = tmp_path / "mnt"
    private.mkdir()
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, str(img)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env={**os.environ, "TMPDIR": str(private)})
    try:
        assert child.stdout is not None
        path, mountpoint, file = child.stdout.readline().split()
        assert path.startswith("/dev/loop")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
            loops_for_backing_file(file) or fuse_mounts(mountpoint)
            or os.path.exists(mountpoint)):
        time.sleep(0.05)
    assert loops_for_backing_file(file) == []  # autoclear: the loop fd died with the process
    assert fuse_mounts(mountpoint) == []  # auto_unmount, or the reaper's retries
    assert not os.path.exists(mountpoint)  # the reaper removed the directory
    assert os.path.dirname(mountpoint) == str(private)
    assert sweep_stale(str(private)) == []  # nothing left for the sweeper


def test_sweeper_removes_the_mountpoints_of_dead_processes(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid nobody has any more
    stale = tmp_path / f"blockrig-export-{dead.pid}-abc"
    mine = tmp_path / f"blockrig-export-{os.getpid()}-abc"
    stale.mkdir()
    mine.mkdir()
    assert sweep_stale(str(tmp_path)) == [str(stale)]
    assert not stale.exists() and mine.exists()


def test_discard_and_write_zeroes_reach_the_graph(tmp_path: Path) -> None:
    img = tmp_path / "trim.img"
    img.write_bytes(b"\xaa" * (1 << 20))
    with rig.open({"driver": "file", "filename": str(img)}) as blk, export(blk) as ex:
        for extra in ([], ["-z"]):
            r = subprocess.run(["blkdiscard", *extra, "-o", "0", "-l", "64k", ex.path],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
        assert blk.stats.by_op["discard"].ops >= 1
        assert blk.stats.by_op["zero"].ops >= 1
    assert img.read_bytes()[:65536] == bytes(65536)
    _assert_nothing_left(ex)


def test_rig_run_takes_a_blkdebug_config(tmp_path: Path) -> None:
    conf = tmp_path / "rules.conf"
    conf.write_text('[inject-error]\nevent = "none"\nerrno = "28"\nsector = "800"\n'
                    'iotype = "write"\n')
    script = 'dd if=/dev/zero of="$RIG_DEV" bs=4k count=1 seek=100 oflag=direct'
    r = subprocess.run([sys.executable, "-m", "rig.cli.main", "run", "--faults", str(conf),
                        "--size", "1M", "--", "sh", "-c", script],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "No space left on device" in r.stderr
