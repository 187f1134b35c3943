"""``rig export GRAPH`` serves until a stop signal and leaves nothing; a stalled graph answers
ETIMEDOUT when a request timeout is set; several exports run at once, each with its own data."""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

import rig
from rig.core.backend import BlockBackend
from rig.drivers.export import Export, export, fuse_mounts
from rig.drivers.loop import loops_for_backing_file
from rig.filters.blkdebug import BlkdebugFilter, find_debug_node

pytestmark = pytest.mark.rig_needs("loop", "fuse")

MiB = 1 << 20
RULES = """
[[rules]]
action = "error"
op = "read"
start = 1048576
end = 1052672
errno = "EIO"
"""


def _rig(*args: str, tmpdir: Path) -> subprocess.Popen[str]:
    # A private TMPDIR: the mountpoint is ours to look for, and no other worker sweeps it.
    return subprocess.Popen([sys.executable, "-m", "rig.cli.main", "export", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmpdir)})


def _dd_read(dev: str, skip_kib: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["dd", f"if={dev}", "of=/dev/null", "bs=4k", "count=1",
                           f"skip={skip_kib // 4}", "iflag=direct"],
                          capture_output=True, text=True, timeout=60)


def _wait_gone(file: str, under: str) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (loops_for_backing_file(file) or fuse_mounts(under)):
        time.sleep(0.05)
    assert loops_for_backing_file(file) == []
    assert fuse_mounts(under) == []


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_rig_export_serves_until_stopped_then_tears_down(tmp_path: Path, stop: int) -> None:
    img = tmp_path / "disk.img"
    img.write_bytes(b"\x5a" * (4 * MiB))
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    child = _rig("--faults", str(rules), str(img), tmpdir=mnt)
    try:
        assert child.stdout is not None
        dev = child.stdout.readline().strip()
        assert dev.startswith("/dev/loop"), dev
        file = os.path.join(fuse_mounts(str(mnt))[0], "disk")
        assert loops_for_backing_file(file) == [dev]
        bad = _dd_read(dev, 1024)
        assert bad.returncode == 1 and "Input/output error" in bad.stderr
        assert _dd_read(dev, 1028).returncode == 0
        with open(dev, "rb") as f:
            assert f.read(512) == b"\x5a" * 512
        child.send_signal(stop)
        _, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert f"rig export: {dev} stopped after" in err and "(1 failed)" in err
    assert "Traceback" not in err
    _wait_gone(file, str(mnt))
    assert not any(mnt.iterdir())  # the mountpoint dir is removed too


def test_sigkilled_rig_export_leaves_no_loop_and_no_mount(tmp_path: Path) -> None:
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(MiB))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    child = _rig(str(img), tmpdir=mnt)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().startswith("/dev/loop")
        file = os.path.join(fuse_mounts(str(mnt))[0], "disk")
    finally:
        child.kill()
        child.communicate()
    _wait_gone(file, str(mnt))


@pytest.mark.parametrize("args, message", [
    (["/nonexistent/disk.img"], "/nonexistent/disk.img"),
    (["--faults", "/nonexistent/rules.toml", "IMG"], "--faults: /nonexistent/rules.toml"),
    (["--max-write", "1000", "IMG"], "max_write must be a multiple of 4096"),
    (["--timeout", "-1", "IMG"], "request_timeout must be 0 (none) or a positive"),
    (["--threads", "0", "IMG"], "threads must be 1 to 64"),
    (["json:{\"driver\": \"nope\"}"], "nope"),
])
def test_rig_export_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str],
                                                      message: str) -> None:
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(MiB))
    child = _rig(*[str(img) if a == "IMG" else a for a in args], tmpdir=tmp_path)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 2, err
    assert out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rig export: ") and message in lines[0], err
    assert img.read_bytes() == bytes(MiB)
    assert loops_for_backing_file(str(img)) == []


def _breakpoint_graph(tmp_path: Path) -> dict[str, Any]:
    """raw over blkdebug over a 1 MiB zeroed file: raw fires read_aio on its child, as QEMU's
    formats do, so a ``read_aio`` breakpoint parks reads."""
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(MiB))
    return {"driver": "raw", "file": {"driver": "blkdebug",
                                      "image": {"driver": "file", "filename": str(img)}}}


def _debug(blk: BlockBackend) -> BlkdebugFilter:
    debug = find_debug_node(blk.root)
    assert debug is not None
    return debug


def test_a_stalled_graph_answers_etimedout_with_a_request_timeout(tmp_path: Path) -> None:
    with rig.open(_breakpoint_graph(tmp_path)) as blk, export(blk, request_timeout=1.0) as ex:
        debug = _debug(blk)
        debug.set_breakpoint("read_aio", "stall")
        t0 = time.monotonic()
        r = _dd_read(ex.path, 0)
        waited = time.monotonic() - t0
        assert r.returncode == 1 and "Connection timed out" in r.stderr, r.stderr
        assert 1.0 <= waited < 10
        assert debug.is_suspended("stall")
        assert ex.operations.timed_out == 1
        assert debug.resume("stall")  # the stalled read finishes in its pool thread
        assert _dd_read(ex.path, 0).returncode == 0
    assert loops_for_backing_file(ex.file) == []


def test_several_exports_at_once_each_serve_their_own_graph(tmp_path: Path) -> None:
    n = 4
    images = []
    for i in range(n):
        img = tmp_path / f"disk{i}.img"
        img.write_bytes(b"")
        os.truncate(img, 8 * MiB)
        images.append(img)
    errors: list[BaseException] = []
    exports: list[Export] = []

    def work(ex: Export, pattern: int) -> None:
        try:
            fd = os.open(ex.path, os.O_RDWR | os.O_DIRECT)
            try:
                import mmap

                buf = mmap.mmap(-1, MiB)
                for chunk in range(8):
                    buf[:] = bytes([pattern ^ chunk]) * MiB
                    assert os.pwrite(fd, buf, chunk * MiB) == MiB
                os.fsync(fd)
                for chunk in range(8):
                    assert os.preadv(fd, [buf], chunk * MiB) == MiB
                    assert buf[:] == bytes([pattern ^ chunk]) * MiB
            finally:
                os.close(fd)
        except BaseException as e:
            errors.append(e)

    with ExitStack() as stack:
        for img in images:
            blk = stack.enter_context(rig.open({"driver": "file", "filename": str(img)}))
            exports.append(stack.enter_context(export(blk)))
        assert len({ex.path for ex in exports}) == n
        assert len({ex.mountpoint for ex in exports}) == n
        threads = [threading.Thread(target=work, args=(ex, 0x10 * (i + 1)))
                   for i, ex in enumerate(exports)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
    for i, (img, ex) in enumerate(zip(images, exports, strict=True)):
        data = img.read_bytes()
        for chunk in range(8):
            assert data[chunk * MiB:(chunk + 1) * MiB] == bytes([0x10 * (i + 1) ^ chunk]) * MiB
        assert loops_for_backing_file(ex.file) == []
        assert fuse_mounts(ex.mountpoint) == []
        assert not os.path.exists(ex.mountpoint)


@pytest.mark.parametrize("threads", [8, 2])
def test_requests_are_served_concurrently(tmp_path: Path, threads: int) -> None:
    """A read parked at a breakpoint does not hold up another program's read (libfuse's
    multithreaded loop: the default of 8 threads, and the least there is)."""
    with rig.open(_breakpoint_graph(tmp_path)) as blk, export(blk, threads=threads) as ex:
        debug = _debug(blk)
        debug.set_breakpoint("read_aio", "first")
        parked = subprocess.Popen(["dd", f"if={ex.path}", "of=/dev/null", "bs=4k", "count=1",
                                   "iflag=direct"], stderr=subprocess.PIPE, text=True)
        try:
            assert debug.wait_break("first", timeout=30)
            other = _dd_read(ex.path, 512)  # served while the first read is still parked
            assert other.returncode == 0, other.stderr
            assert parked.poll() is None and debug.is_suspended("first")
            assert debug.resume("first")
            assert parked.wait(timeout=30) == 0
        finally:
            if parked.poll() is None:
                debug.resume("first")
                parked.kill()
            parked.communicate()


def test_rig_export_threads_1_serves_single_threaded(tmp_path: Path) -> None:
    """``--threads 1``: libfuse's single-threaded loop serves reads, writes and faults alike."""
    img = tmp_path / "disk.img"
    img.write_bytes(b"\x5a" * (4 * MiB))
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    child = _rig("--threads", "1", "--faults", str(rules), str(img), tmpdir=mnt)
    try:
        assert child.stdout is not None
        dev = child.stdout.readline().strip()
        assert dev.startswith("/dev/loop"), dev
        file = os.path.join(fuse_mounts(str(mnt))[0], "disk")
        bad = _dd_read(dev, 1024)
        assert bad.returncode == 1 and "Input/output error" in bad.stderr
        fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
        try:
            buf = mmap.mmap(-1, MiB)
            buf[:] = b"\xa5" * MiB
            assert os.pwritev(fd, [buf], 2 * MiB) == MiB
            os.fsync(fd)
            back = mmap.mmap(-1, MiB)
            assert os.preadv(fd, [back], 2 * MiB) == MiB and back[:] == buf[:]
        finally:
            os.close(fd)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert " writes" in err and " flushes" in err and "(1 failed)" in err, err
    _wait_gone(file, str(mnt))
    assert img.read_bytes()[2 * MiB:3 * MiB] == b"\xa5" * MiB


def test_the_export_leaves_the_working_directory_alone(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """libfuse chdirs to / when it starts serving; a relative path must still mean the same."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "disk.img").write_bytes(bytes(MiB))
    with rig.open({"driver": "file", "filename": "disk.img"}) as blk, export(blk):
        assert os.getcwd() == str(tmp_path)
        assert os.path.exists("disk.img")
