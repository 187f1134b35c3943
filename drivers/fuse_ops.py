"""The FUSE side of an export: one file, ``/disk``, whose bytes are a :class:`BlockBackend`.

mfusepy (ctypes over libfuse3) calls these methods from libfuse's worker threads. An ``OSError``
raised by the backend goes back to the kernel as ``-errno`` (mfusepy's wrapper does that), so
ENOSPC, ENODATA, ETIMEDOUT, EAGAIN and EOPNOTSUPP reach the program; the block layer turns the rest
into EIO (``docs/export.md``).

mfusepy registers every attribute whose name is a FUSE operation as a callback, so this class
keeps its state in underscore names only (a ``self.lock`` would become the ``lock`` op).

With ``request_timeout`` set, every data request runs on a pool of the export's own and the FUSE
thread waits at most that long for it: a graph that stalls (a breakpoint never resumed, a hung
host device) answers ETIMEDOUT, which the block layer passes to the program unchanged, instead
of blocking it forever (the kernel's own FUSE request timeout is 0, that is none, here). The
stalled call itself goes on in its pool thread; a write that timed out may still land later,
as with a disk whose command timed out.
"""

from __future__ import annotations

import errno
import queue
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from rig.core.backend import BlockBackend

FILE_NAME = "disk"
_PATH = "/" + FILE_NAME
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
#: Pool threads for timed requests: libfuse's ``max_threads`` plus room for stalled ones.
_TIMED_WORKERS = 16
_T = TypeVar("_T")


class _DaemonPool:
    """Worker threads for timed requests. Daemon threads, unlike ThreadPoolExecutor's: a request
    stalled for good must not keep the process from exiting."""

    def __init__(self, workers: int) -> None:
        self._tasks: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]
                                       | None] = queue.SimpleQueue()
        self._workers = workers
        for n in range(workers):
            threading.Thread(target=self._work, name=f"rig-export-req-{n}", daemon=True).start()

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            future, fn, args = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as e:
                future.set_exception(e)

    def submit(self, fn: Callable[..., _T], *args: Any) -> Future[_T]:
        future: Future[_T] = Future()
        self._tasks.put((future, fn, args))
        return future

    def shutdown(self) -> None:
        for _ in range(self._workers):
            self._tasks.put(None)


class ExportOperations:
    """mfusepy operations (``raw_fi=True``) serving ``backend`` as the single file ``/disk``."""

    use_ns = True

    def __init__(self, backend: BlockBackend, *, max_write: int = 0,
                 request_timeout: float = 0.0) -> None:
        if request_timeout < 0:
            raise ValueError(f"request_timeout must be >= 0 seconds, got {request_timeout}")
        self._backend = backend
        self._max_write_wanted = max_write
        self._timeout = request_timeout
        self._pool = _DaemonPool(_TIMED_WORKERS) if request_timeout else None
        #: Requests answered ETIMEDOUT because the graph did not finish them in time.
        self.timed_out = 0
        self._size = backend.getlength()
        self._mtime = time.time_ns()
        #: What the kernel and libfuse agreed on (set in init_with_config); 0 until mounted.
        self.negotiated_max_write = 0
        #: FUSE fsync requests seen (each is one backend flush).
        self.fsync_count = 0

    # ------------------------------------------------------------------ lifecycle
    def _call(self, what: str, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)``, or ETIMEDOUT after ``request_timeout`` seconds if one is set."""
        if self._pool is None:
            return fn(*args)
        future = self._pool.submit(fn, *args)
        try:
            return future.result(timeout=self._timeout)
        except FutureTimeout:
            self.timed_out += 1
            raise OSError(errno.ETIMEDOUT, f"{what} did not complete within "
                          f"{self._timeout:g} s") from None

    def stop_timed_requests(self) -> None:
        """Stop taking timed requests (stalled ones go on; their threads are not joined)."""
        if self._pool is not None:
            self._pool.shutdown()

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
        self._call("read", self._backend.preadv, offset, [memoryview(buf)])
        return bytes(buf)

    def write(self, path: str, data: bytes, offset: int, fh: Any) -> int:
        if offset + len(data) > self._size:
            raise OSError(errno.ENOSPC, "write beyond the end of the export")
        self._call("write", self._backend.pwritev, offset, [memoryview(data)])
        return len(data)

    def fsync(self, path: str, datasync: int, fh: Any) -> int:
        """A block-device fsync arrives here (datasync=0): one flush of the graph."""
        self.fsync_count += 1
        self._call("flush", self._backend.flush)
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
            self._call("discard", self._backend.discard, offset, size)
        elif mode & ~FALLOC_FL_KEEP_SIZE == FALLOC_FL_ZERO_RANGE:
            self._call("write-zeroes", self._backend.write_zeroes, offset, size)
        elif mode & ~FALLOC_FL_KEEP_SIZE:
            raise OSError(errno.EOPNOTSUPP, f"fallocate mode {mode:#x}")
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        blocks = self._size // 4096
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": blocks, "f_bfree": 0,
                "f_bavail": 0, "f_namemax": 255}
