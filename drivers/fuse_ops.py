"""The FUSE side of an export: one file, ``/disk``, whose bytes are a :class:`BlockBackend`.

mfusepy (ctypes over libfuse3) calls these methods from libfuse's worker threads. An ``OSError``
raised by the backend goes back to the kernel as ``-errno`` (mfusepy's wrapper does that), so
ENOSPC, ENODATA, ETIMEDOUT, EAGAIN and EOPNOTSUPP reach the program; the block layer turns the rest
into EIO (``docs/export.md``).

mfusepy registers every attribute whose name is a FUSE operation as a callback, so this class
keeps its state in underscore names only (a ``self.lock`` would become the ``lock`` op).
"""

from __future__ import annotations

import errno
import stat
import time
from typing import Any

from rig.core.backend import BlockBackend

FILE_NAME = "disk"
_PATH = "/" + FILE_NAME
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10


class ExportOperations:
    """mfusepy operations (``raw_fi=True``) serving ``backend`` as the single file ``/disk``."""

    use_ns = True

    def __init__(self, backend: BlockBackend, *, max_write: int = 0) -> None:
        self._backend = backend
        self._max_write_wanted = max_write
        self._size = backend.getlength()
        self._mtime = time.time_ns()
        #: What the kernel and libfuse agreed on (set in init_with_config); 0 until mounted.
        self.negotiated_max_write = 0
        #: FUSE fsync requests seen (each is one backend flush).
        self.fsync_count = 0

    # ------------------------------------------------------------------ lifecycle
    def init_with_config(self, conn: Any, config: Any) -> None:
        """Lower ``max_write`` if asked, record it; keep the kernel from caching data."""
        if conn is not None:
            if self._max_write_wanted and conn.max_write > self._max_write_wanted:
                conn.max_write = self._max_write_wanted
            self.negotiated_max_write = int(conn.max_write)
        if config is not None:
            config.direct_io = 1
            config.kernel_cache = 0
            config.auto_cache = 0

    # ------------------------------------------------------------------ namespace
    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        t = self._mtime
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o700, "st_nlink": 2,
                    "st_atime": t, "st_mtime": t, "st_ctime": t}
        if path == _PATH:
            return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": self._size,
                    "st_blocks": (self._size + 511) // 512,
                    "st_atime": t, "st_mtime": t, "st_ctime": t}
        raise OSError(errno.ENOENT, "no such file")

    def readdir(self, path: str, fh: int) -> list[str]:
        if path != "/":
            raise OSError(errno.ENOTDIR, "not a directory")
        return [".", "..", FILE_NAME]

    def open(self, path: str, fi: Any) -> int:
        """Every open gets FOPEN_DIRECT_IO: no FUSE page cache can hide a fault."""
        if path != _PATH:
            raise OSError(errno.ENOENT, "no such file")
        fi.direct_io = 1
        fi.keep_cache = 0
        fi.fh = 0
        return 0

    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        if length != self._size:
            raise OSError(errno.EPERM, "the export has a fixed size")
        return 0

    # ------------------------------------------------------------------ data
    def read(self, path: str, size: int, offset: int, fh: Any) -> bytes:
        n = max(0, min(size, self._size - offset))
        if n == 0:
            return b""
        buf = bytearray(n)
        self._backend.preadv(offset, [memoryview(buf)])
        return bytes(buf)

    def write(self, path: str, data: bytes, offset: int, fh: Any) -> int:
        if offset + len(data) > self._size:
            raise OSError(errno.ENOSPC, "write beyond the end of the export")
        self._backend.pwritev(offset, [memoryview(data)])
        return len(data)

    def fsync(self, path: str, datasync: int, fh: Any) -> int:
        """A block-device fsync arrives here (datasync=0): one flush of the graph."""
        self.fsync_count += 1
        self._backend.flush()
        return 0

    def flush(self, path: str, fh: Any) -> int:
        """FUSE ``flush`` is close(2), not a cache flush: nothing to do."""
        return 0

    def release(self, path: str, fh: Any) -> int:
        return 0

    def fallocate(self, path: str, mode: int, offset: int, size: int, fh: Any) -> int:
        """Loop's discard (punch hole) and write-zeroes (zero range) map to the backend."""
        if offset < 0 or offset + size > self._size:
            raise OSError(errno.EINVAL, "range beyond the end of the export")
        if mode == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE:
            self._backend.discard(offset, size)
        elif mode & ~FALLOC_FL_KEEP_SIZE == FALLOC_FL_ZERO_RANGE:
            self._backend.write_zeroes(offset, size)
        elif mode & ~FALLOC_FL_KEEP_SIZE:
            raise OSError(errno.EOPNOTSUPP, f"fallocate mode {mode:#x}")
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        blocks = self._size // 4096
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": blocks, "f_bfree": 0,
                "f_bavail": 0, "f_namemax": 255}
