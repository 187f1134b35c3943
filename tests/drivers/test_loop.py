"""Loop devices through ioctls, on real loop devices (needs root and /dev/loop-control)."""

from __future__ import annotations

import contextlib
import errno
import gc
import mmap
import multiprocessing
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path

import pytest

from rig.drivers.loop import (
    LoopDevice,
    loops_for_backing_file,
    owned_device_numbers,
    owned_devices,
    scratch_loop,
)
from rig.errors import ConfigError, DeviceNotFoundError, RigError, StateError

pytestmark = pytest.mark.rig_needs("loop")

MiB = 1024 * 1024
FORK = multiprocessing.get_context("fork")


def _sysfs(dev: LoopDevice, rel: str) -> str:
    return Path(dev.sysfs_dir, rel).read_text().strip()


def _wait_unbound(backing: str, timeout: float = 5.0) -> list[str]:
    """Poll until no loop device is bound to ``backing``; returns what is still bound."""
    deadline = time.monotonic() + timeout
    while True:
        bound = loops_for_backing_file(backing)
        if not bound or time.monotonic() > deadline:
            return bound
        time.sleep(0.02)


@pytest.fixture
def backing(tmp_path: Path) -> Iterator[str]:
    """An 8 MiB sparse file; asserts that no loop device is left bound to it afterwards."""
    path = tmp_path / "backing.img"
    with open(path, "wb") as f:
        f.truncate(8 * MiB)
    yield str(path)
    leftover = _wait_unbound(str(path))
    for dev in leftover:  # clean up before failing, so one bug does not leak devices
        subprocess.run(["losetup", "-d", dev], check=False)
    assert not leftover, f"loop devices still bound to {path}: {leftover}"


def _odirect_read(path: str, offset: int, length: int) -> int:
    buf = mmap.mmap(-1, max(length, mmap.PAGESIZE))  # page-aligned, as O_DIRECT wants
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        return os.preadv(fd, [memoryview(buf)[:length]], offset)
    finally:
        os.close(fd)
        buf.close()


@pytest.mark.parametrize("block_size", [512, 4096])
def test_attach_block_size(backing: str, block_size: int) -> None:
    with LoopDevice.attach(backing, block_size=block_size) as dev:
        assert dev.path == f"/dev/loop{dev.index}"
        assert dev.backing_file == os.path.realpath(backing)
        assert int(_sysfs(dev, "queue/logical_block_size")) == block_size
        assert _sysfs(dev, "loop/backing_file") == dev.backing_file
        assert _sysfs(dev, "loop/autoclear") == "1"
        assert dev.size == 8 * MiB
        assert _odirect_read(dev.path, 0, block_size) == block_size
        if block_size > 512:
            with pytest.raises(OSError) as exc:
                _odirect_read(dev.path, 0, 512)
            assert exc.value.errno == errno.EINVAL


def test_read_only_device_refuses_writes(backing: str) -> None:
    with LoopDevice.attach(backing, read_only=True) as dev:
        assert dev.read_only
        assert _sysfs(dev, "ro") == "1"
        fd = os.open(dev.path, os.O_RDWR)
        try:
            with pytest.raises(OSError) as exc:
                os.pwrite(fd, b"x" * 512, 0)
            assert exc.value.errno == errno.EPERM
        finally:
            os.close(fd)


def test_direct_io(backing: str) -> None:
    with LoopDevice.attach(backing, block_size=4096, direct_io=True) as dev:
        assert dev.direct_io
        assert dev.dio
        assert _sysfs(dev, "loop/dio") == "1"


def test_buffered_by_default(backing: str) -> None:
    with LoopDevice.attach(backing) as dev:
        assert not dev.dio


def test_data_reaches_backing_file(backing: str) -> None:
    with LoopDevice.attach(backing) as dev:
        fd = os.open(dev.path, os.O_RDWR)
        try:
            os.pwrite(fd, b"blockrig" * 64, 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
    with open(backing, "rb") as f:
        f.seek(4096)
        assert f.read(512) == b"blockrig" * 64


def test_offset_and_size_limit(backing: str) -> None:
    with open(backing, "r+b") as f:
        f.seek(MiB)
        f.write(b"W" * 512)
    with LoopDevice.attach(backing, offset=MiB, size_limit=2 * MiB) as dev:
        assert dev.size == 2 * MiB
        with open(dev.path, "rb") as f:
            assert f.read(512) == b"W" * 512


def test_detach_unbinds_and_is_idempotent(backing: str) -> None:
    dev = LoopDevice.attach(backing)
    assert dev.path in owned_devices()
    assert dev.device_number in owned_device_numbers()
    assert loops_for_backing_file(backing) == [dev.path]
    dev.detach()
    dev.detach()
    assert not dev.attached
    assert dev.path not in owned_devices()
    assert _wait_unbound(backing) == []
    with pytest.raises(StateError):
        dev.fileno()
    with pytest.raises(StateError):
        _ = dev.dio


def test_garbage_collection_detaches(backing: str) -> None:
    dev = LoopDevice.attach(backing)
    path = dev.path
    del dev
    gc.collect()
    assert path not in owned_devices()
    assert _wait_unbound(backing) == []


def test_forked_child_does_not_keep_parent_device(backing: str) -> None:
    """A fork child closes the inherited fd, so the parent's detach is immediate."""
    with LoopDevice.attach(backing) as dev:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                ok = not owned_devices() and not dev.attached
                os.write(w, b"1" if ok else b"0")
                time.sleep(30)
            finally:
                os._exit(0)
        try:
            os.close(w)
            assert os.read(r, 1) == b"1"
            dev.detach()
            assert _wait_unbound(backing, timeout=2.0) == []
        finally:
            os.close(r)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def _attach_worker(
    backing: str,
    barrier: Barrier,
    results: Queue[tuple[str, str, str, int, str]],
    release: Event,
) -> None:
    try:
        barrier.wait(timeout=30)
        with LoopDevice.attach(backing) as dev:
            bound = Path(dev.sysfs_dir, "loop/backing_file").read_text().strip()
            results.put((dev.backing_file, dev.path, bound, dev.attempts, ""))
            release.wait(timeout=60)
    except BaseException as e:
        results.put((backing, "", "", 0, repr(e)))


def test_parallel_attach_gets_distinct_devices(tmp_path: Path) -> None:
    """4 processes released together: each binds its own device to its own file."""
    files = []
    for i in range(4):
        path = tmp_path / f"p{i}.img"
        with open(path, "wb") as f:
            f.truncate(MiB)
        files.append(str(path))
    retried = 0
    try:
        for _ in range(5):
            barrier = FORK.Barrier(len(files))
            release = FORK.Event()
            results: Queue[tuple[str, str, str, int, str]] = FORK.Queue()
            procs = [
                FORK.Process(target=_attach_worker, args=(f, barrier, results, release))
                for f in files
            ]
            for p in procs:
                p.start()
            try:
                got = [results.get(timeout=60) for _ in procs]
            finally:
                release.set()
                for p in procs:
                    p.join(timeout=30)
                    if p.is_alive():
                        p.kill()
                        p.join()
            errors = [r[4] for r in got if r[4]]
            assert not errors
            assert len({r[1] for r in got}) == len(files), got
            for own, _path, bound, attempts, _err in got:
                assert bound == own
                retried += attempts > 1
    finally:
        for name in files:
            assert _wait_unbound(name) == []
    print(f"attaches that had to retry: {retried}/20")


def _attach_and_hang(backing: str, conn: Connection) -> None:
    dev = LoopDevice.attach(backing)
    conn.send(dev.path)
    time.sleep(120)


def test_sigkilled_owner_leaves_nothing_bound(backing: str) -> None:
    parent, child = FORK.Pipe()
    proc = FORK.Process(target=_attach_and_hang, args=(backing, child))
    proc.start()
    try:
        assert parent.poll(30), "child did not attach"
        path = parent.recv()
        assert loops_for_backing_file(backing) == [path]
        os.kill(proc.pid or 0, signal.SIGKILL)
        proc.join(timeout=10)
        assert _wait_unbound(backing) == []
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()


@pytest.fixture
def ramfs_dir(tmp_path: Path) -> Iterator[str]:
    """A ramfs mount: a filesystem without O_DIRECT."""
    mnt = tmp_path / "ramfs"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "ramfs", "ramfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount ramfs: {res.stderr.decode().strip()}")
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_direct_io_refused_is_an_error(ramfs_dir: str) -> None:
    path = os.path.join(ramfs_dir, "f.img")
    with open(path, "wb") as f:
        f.truncate(MiB)
    with pytest.raises(RigError, match="refused direct I/O"):
        LoopDevice.attach(path, direct_io=True)
    assert _wait_unbound(path) == []
    with pytest.raises(ConfigError, match="without O_DIRECT"), scratch_loop(
        MiB, direct_io=True, dir=ramfs_dir
    ):
        pass


def test_argument_errors(backing: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="power of two"):
        LoopDevice.attach(backing, block_size=3000)
    with pytest.raises(DeviceNotFoundError, match="does not exist"):
        LoopDevice.attach(str(tmp_path / "missing.img"))
    with pytest.raises(ConfigError), scratch_loop(1000):
        pass


def test_non_root_gets_one_line_fix() -> None:
    fd, path = tempfile.mkstemp(dir="/var/tmp", suffix=".img")
    os.ftruncate(fd, MiB)
    os.close(fd)
    os.chmod(path, 0o666)
    r, w = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                try:
                    LoopDevice.attach(path).detach()
                    msg = "attached"
                except RigError as e:
                    msg = str(e)
                os.write(w, msg.encode())
            finally:
                os._exit(0)
        os.close(w)
        w = -1
        msg = os.read(r, 4096).decode()
        os.waitpid(pid, 0)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
        os.unlink(path)
    assert "need root" in msg
    assert "\n" not in msg


def test_scratch_loop_cleans_up_on_exception() -> None:
    with pytest.raises(ZeroDivisionError), scratch_loop(4 * MiB, block_size=4096) as dev:
        backing = dev.backing_file
        assert os.path.getsize(backing) == 4 * MiB
        assert os.stat(backing).st_blocks == 0  # sparse
        assert int(_sysfs(dev, "queue/logical_block_size")) == 4096
        _ = 1 / 0
    assert not os.path.exists(backing)
    assert _wait_unbound(backing) == []
    assert not dev.attached


def test_scratch_loop_direct_io() -> None:
    with scratch_loop(4 * MiB, block_size=4096, direct_io=True) as dev:
        assert dev.dio


def test_set_max_sectors_kb() -> None:
    with scratch_loop(MiB) as dev:
        assert dev.set_max_sectors_kb(128) == 128
        assert dev.max_sectors_kb == 128
        with pytest.raises(ConfigError):
            dev.set_max_sectors_kb(0)
        with pytest.raises(ConfigError, match="max_sectors_kb=1 "):
            dev.set_max_sectors_kb(1)  # below one page
        # Above max_hw_sectors_kb: older kernels refuse (EINVAL), 6.x clamps.
        hw = int(_sysfs(dev, "queue/max_hw_sectors_kb"))
        with contextlib.suppress(ConfigError):
            assert dev.set_max_sectors_kb(hw + 4096) == hw
