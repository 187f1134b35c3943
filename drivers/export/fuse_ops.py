"""The FUSE side of an export: one file, ``/disk``, whose bytes are a :class:`BlockBackend`.

mfusepy (ctypes over libfuse3) calls these methods from libfuse's worker threads. An ``OSError``
raised by the backend goes back to the kernel as ``-errno`` (mfusepy's wrapper does that), so
ENOSPC, ENODATA, ETIMEDOUT, EAGAIN and EOPNOTSUPP reach the program; the block layer turns the rest
into EIO (``docs/export.md``).

mfusepy registers every attribute whose name is a FUSE operation as a callback, so this class
keeps its state in underscore names only (a ``self.lock`` would become the ``lock`` op).

Data goes through ``read_buf``/``write_buf``, not ``read``/``write``, so that no request makes
fresh memory or copies in Python: a READ is read by the backend straight into page-aligned
memory (``posix_memalign``) that libfuse sends and frees; a WRITE's data is copied once, by
libfuse's ``fuse_buf_copy`` without the GIL, into a pooled page-aligned buffer that the backend
writes as is. Each libfuse worker keeps its Python thread state (:meth:`ExportOperations._pin`).

With ``request_timeout`` set, every data request runs on a pool of the export's own and the FUSE
thread waits at most that long for it: a graph that stalls (a breakpoint never resumed, a hung
host device) answers ETIMEDOUT, which the block layer passes to the program unchanged, instead
of blocking it forever (the kernel's own FUSE request timeout is 0, that is none, here). The
stalled call itself goes on in its pool thread; a write that timed out may still land later,
as with a disk whose command timed out.
"""

from __future__ import annotations

import ctypes
import errno
import queue
import stat
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from rig.core.backend import BlockBackend
from rig.core.buffers import PAGE_SIZE, BufferPool, aligned_buffer, buffer_address
from rig.drivers.ffi import libc
from rig.drivers.ffi.calls import bind
from rig.drivers.ffi.libc import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE
from rig.drivers.ffi.libfuse import LIBFUSE, FuseBufvec

FILE_NAME = "disk"
_PATH = "/" + FILE_NAME
#: Pool threads for timed requests: libfuse's ``max_threads`` plus room for stalled ones.
_TIMED_WORKERS = 16
_T = TypeVar("_T")
#: Pooled write buffers: FUSE's largest WRITE with libfuse3 (a larger one gets a fresh buffer).
_WRITE_BUF = 1 << 20


class _Native:
    """The C functions the zero-copy paths call: libc's allocator (libfuse frees what a
    ``read_buf`` hands it with ``free``) and libfuse's ``fuse_buf_copy``/``fuse_buf_size``, as
    bound from their tables (:mod:`rig.drivers.ffi`), called directly. ctypes releases the GIL
    around each call."""

    def __init__(self, libfuse: Any) -> None:
        self.posix_memalign = libc.function("posix_memalign")
        self.malloc = libc.function("malloc")
        self.free = libc.function("free")
        fuse = bind(libfuse, LIBFUSE)
        self.buf_copy = fuse["fuse_buf_copy"]
        self.buf_size = fuse["fuse_buf_size"]

    def aligned_alloc(self, size: int) -> int:
        """``posix_memalign(PAGE_SIZE, size)``: memory libfuse may ``free``."""
        ptr = ctypes.c_void_p()
        if self.posix_memalign(ctypes.byref(ptr), PAGE_SIZE, max(size, 1)) or not ptr.value:
            raise OSError(errno.ENOMEM, "out of memory for a read reply")
        return ptr.value


def _address(buf: memoryview) -> int:
    addr = buffer_address(buf)
    if addr is None:
        raise ValueError("a pooled buffer must be writable")
    return addr


class _TimedOut(OSError):
    """ETIMEDOUT from :meth:`ExportOperations._call`: the call goes on, and the ``abandon``
    clean-up runs when it ends."""


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
        #: Requests failed with EIO because the graph raised something other than OSError.
        self.internal_errors = 0
        self._reported: set[str] = set()
        self._size = backend.getlength()
        self._mtime = time.time_ns()
        #: What the kernel and libfuse agreed on (set in init_with_config); 0 until mounted.
        self.negotiated_max_write = 0
        #: FUSE fsync requests seen (each is one backend flush).
        self.fsync_count = 0
        from rig.drivers.export.device import load_mfusepy

        self._native = _Native(load_mfusepy()._libfuse)
        #: Page-aligned buffers that WRITE data is copied into (reused: no fresh memory).
        self._write_bufs = BufferPool(_WRITE_BUF, keep=16)
        self._threads = threading.local()

    # ------------------------------------------------------------------ lifecycle
    def _call(self, what: str, fn: Callable[..., _T], *args: Any,
              abandon: Callable[[], None] | None = None) -> _T:
        """``fn(*args)``, or ETIMEDOUT (:class:`_TimedOut`) after ``request_timeout`` seconds if
        one is set. A timed-out call goes on; ``abandon`` then runs once it has ended (it gives
        back the buffers the call still uses)."""
        try:
            if self._pool is None:
                return fn(*args)
            future = self._pool.submit(fn, *args)
            try:
                return future.result(timeout=self._timeout)
            except FutureTimeout:
                # The wait timed out (an OSError too since 3.11: told apart by where it came
                # from, as an injected ETIMEDOUT from the graph is also a TimeoutError).
                if future.done():  # the graph's own error, or it finished just now
                    return future.result()
                self.timed_out += 1
                if abandon is not None:
                    future.add_done_callback(lambda _: abandon())
                raise _TimedOut(errno.ETIMEDOUT, f"{what} did not complete within "
                                f"{self._timeout:g} s") from None
        except OSError:
            raise
        except Exception as e:
            raise self._internal_error(what, e) from None

    def _internal_error(self, what: str, e: Exception) -> OSError:
        """A bug in the graph (not a data-path OSError) fails the request with EIO and says so
        in one line on stderr (once per kind of error), instead of a traceback from the FUSE
        layer and EINVAL for the program."""
        self.internal_errors += 1
        kind = f"{type(e).__name__}: {e}".splitlines()[0][:200] if str(e) else type(e).__name__
        if kind not in self._reported:
            self._reported.add(kind)
            sys.stderr.write(f"rig export: internal error in {what} ({kind}); the request "
                             "failed with EIO\n")
        return OSError(errno.EIO, f"internal error in {what}")

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
    def _pin(self) -> None:
        """Keep the calling libfuse worker's Python thread state for good.

        ctypes makes a thread state for each callback on a thread Python did not start and
        deletes it on return; one more ``PyGILState_Ensure``, never released, keeps it (one
        per worker thread: a few KiB each, left when the worker ends). Saves that per request,
        and the thread's ``threading.local`` data then lasts (it marks the pinned threads)."""
        local = self._threads
        if not getattr(local, "pinned", False):
            ctypes.pythonapi.PyGILState_Ensure()
            local.pinned = True

    def read_buf(self, path: str, bufpp: Any, size: int, offset: int, fh: Any) -> int:
        """READ into page-aligned memory handed to libfuse, which sends it and frees it: the
        backend reads straight into the reply (no bounce, no copy in Python)."""
        self._pin()
        n = max(0, min(size, self._size - offset))
        native = self._native
        mem = native.aligned_alloc(n)
        try:
            if n:
                view = memoryview((ctypes.c_char * n).from_address(mem)).cast("B")
                self._call("read", self._backend.preadv, offset, [view],
                           abandon=lambda: native.free(mem))
            vec = native.malloc(ctypes.sizeof(FuseBufvec))
            if not vec:
                raise OSError(errno.ENOMEM, "out of memory for a read reply")
        except _TimedOut:
            raise  # the read goes on into mem: freed when it ends
        except BaseException:
            native.free(mem)
            raise
        v = FuseBufvec.from_address(vec)
        v.count, v.idx, v.off = 1, 0, 0
        b = v.buf[0]
        b.size, b.flags, b.mem, b.fd, b.pos = n, 0, mem, -1, 0
        ctypes.cast(bufpp, ctypes.POINTER(ctypes.c_void_p))[0] = vec
        return 0

    def write_buf(self, path: str, buf: Any, offset: int, fh: Any) -> int:
        """WRITE: libfuse copies the data (from its buffer or its splice pipe) into a pooled
        page-aligned buffer, without the GIL; the backend writes that without a bounce."""
        self._pin()
        native = self._native
        size = int(native.buf_size(buf))
        if offset + size > self._size:
            raise OSError(errno.ENOSPC, "write beyond the end of the export")
        pool = self._write_bufs
        whole = pool.get() if size <= pool.size else aligned_buffer(size)
        give_back: Callable[[], None] = (lambda: pool.put(whole)) if size <= pool.size \
            else (lambda: None)
        try:
            dst = FuseBufvec(1, 0, 0)
            dst.buf[0].size, dst.buf[0].mem, dst.buf[0].fd = size, _address(whole), -1
            copied = int(native.buf_copy(ctypes.byref(dst), buf, 0))
            if copied != size:
                err = -copied if copied < 0 else errno.EIO
                raise OSError(err, f"could not take the WRITE's data ({copied} of {size} bytes)")
            self._call("write", self._backend.pwritev, offset, [whole[:size]],
                       abandon=give_back)
        except _TimedOut:
            raise  # the write goes on from the buffer: given back when it ends
        except BaseException:
            give_back()
            raise
        give_back()
        return size

    def fsync(self, path: str, datasync: int, fh: Any) -> int:
        """A block-device fsync arrives here (datasync=0): one flush of the graph."""
        self._pin()
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
