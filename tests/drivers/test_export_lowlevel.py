"""The export's own session on libfuse3's low-level API (issue 20): what libfuse asked the kernel
for, the one-file namespace it answers itself, reads past the end and a read concurrent with
writes, and what it no longer does to the process (signal handlers, the working directory).
One export serves every check."""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from pathlib import Path

import pytest

import rig
from rig.drivers.export.device import export, fuse_mounts
from rig.drivers.export.fuse_ops import fuse_library
from rig.drivers.ffi import libfuse
from rig.drivers.ffi.calls import bind
from rig.drivers.ffi.libfuse import FUSE_CAP_ASYNC_DIO
from rig.drivers.loop import loops_for_backing_file

SIZE = 4 << 20


def test_the_low_level_tables_match_libfuse_3_14() -> None:
    """Every function binds, typed as declared, and the structs have 3.14's x86_64 sizes (a
    wrong layout would be a crash or a silent misreading, not an error)."""
    try:
        lib = fuse_library()
    except OSError as e:
        pytest.skip(f"no libfuse3 here: {e}")
    for name, fn in bind(lib, libfuse.LIBFUSE_LOWLEVEL).items():
        argtypes, restype = libfuse.LIBFUSE_LOWLEVEL[name]
        assert list(fn.argtypes) == list(argtypes) and fn.restype == restype  # type: ignore[attr-defined]
    sizes = {libfuse.Stat: 144, libfuse.FuseEntryParam: 176, libfuse.FuseFileInfo: 40,
             libfuse.Statvfs: 112, libfuse.FuseConnInfo: 128, libfuse.FuseLowlevelOps: 44 * 8}
    assert {t.__name__: ctypes.sizeof(t) for t in sizes} == {t.__name__: n
                                                             for t, n in sizes.items()}
    assert set(libfuse.CALLBACKS) <= set(libfuse.LOWLEVEL_OPS)


def _caught_signals() -> int:
    """The standard signals (1 to 31) this process has handlers for (glibc's own real-time
    ones come and go with threads)."""
    with open("/proc/self/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return mask & 0x7FFFFFFF


@pytest.mark.rig_needs("loop", "fuse")
def test_the_low_level_session_serves_one_file_and_leaves_the_process_alone(
        tmp_path: Path) -> None:
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(range(256)) * (SIZE // 256))
    caught, cwd = _caught_signals(), os.getcwd()
    with rig.open({"driver": "file", "filename": str(img)}) as blk, export(blk) as ex:
        ops = ex.operations
        # libfuse's low-level init asked for async direct I/O: a failed chunk of a split
        # request is an error, not a short count (docs/export.md).
        assert ops.negotiated_want & FUSE_CAP_ASYNC_DIO
        assert ops.negotiated_max_write == ex.max_write == 1 << 20
        # No fuse_main: no libfuse signal handlers, no chdir("/").
        assert _caught_signals() == caught and os.getcwd() == cwd
        # The namespace, answered from the export's own attributes.
        assert os.listdir(ex.mountpoint) == ["disk"]
        st = os.stat(ex.file)
        assert st.st_size == SIZE and st.st_mode & 0o777 == 0o600
        assert os.statvfs(ex.mountpoint).f_blocks == SIZE // 4096
        with pytest.raises(FileNotFoundError):
            os.stat(os.path.join(ex.mountpoint, "other"))
        os.truncate(ex.file, SIZE)  # the same size: fine
        with pytest.raises(OSError) as e:
            os.truncate(ex.file, SIZE // 2)
        assert e.value.errno == errno.EPERM
        # Reads of the file itself: unaligned, across the end, past the end.
        fd = os.open(ex.file, os.O_RDWR)
        try:
            assert os.pread(fd, 5, 3) == bytes([3, 4, 5, 6, 7])
            assert os.pread(fd, 8192, SIZE - 100) == (bytes(range(256)) * 1)[-100:]
            assert os.pread(fd, 4096, SIZE) == b""
            with pytest.raises(OSError) as e:
                os.pwrite(fd, b"x" * 4096, SIZE)
            assert e.value.errno in (errno.ENOSPC, errno.EFBIG)
            # Workers each own a buffer: concurrent reads and writes of distinct blocks keep
            # their own bytes.
            def hammer(n: int) -> None:
                block = bytes([n]) * 4096
                for i in range(50):
                    off = (n * 50 + i) * 4096
                    os.pwrite(fd, block, off)
                    assert os.pread(fd, 4096, off) == block
            threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            os.close(fd)
        with open(ex.path, "rb") as dev:
            dev.seek(7 * 50 * 4096)
            assert dev.read(4096) == bytes([7]) * 4096
    assert loops_for_backing_file(ex.file) == [] and fuse_mounts(ex.mountpoint) == []
    assert img.read_bytes()[3 * 50 * 4096:3 * 50 * 4096 + 4096] == bytes([3]) * 4096
