"""The FUSE side of an export: one file, ``/disk``, whose bytes are a :class:`BlockBackend`.

libfuse3's **low-level** API calls these methods (through :mod:`.lowlevel`) from one thread, the
*reader*, one call per kernel request; no path lookup, no high-level layer. The reader answers
the namespace requests itself and hands the data requests on: a small READ or WRITE that the
graph passes through goes to the image file by native AIO (:mod:`.direct`), everything else to
the export's graph workers (``workers`` threads: :class:`_Workers`), which run it through the
backend and answer it. A reply may come from any of these threads (``fuse_reply_*``). An
``OSError`` from the backend goes back to the kernel as its errno (EINVAL for one without an
errno, as mfusepy did), so ENOSPC, ENODATA, ETIMEDOUT, EAGAIN and EOPNOTSUPP reach the program;
the block layer turns the rest into EIO (``docs/export.md``). Every request is answered exactly
once, whatever is raised: an unanswered request would hang its program.

No request makes fresh memory in Python. Each graph worker owns one page-aligned buffer of
FUSE's largest request (made on its first request: :meth:`ExportOperations._first_request`); a
READ is read by the backend straight into it and sent from it (``fuse_reply_buf``). A WRITE's
data lives in libfuse's request buffer only while its callback runs, so the reader copies it
once (``memcpy``) into a direct-path slot or a pooled buffer, and the backend writes it
from there. The C calls of a request up to 64 KiB keep the GIL (a short writev or memcpy costs
less than handing the GIL to another thread and taking it back); larger ones give it up.

With ``request_timeout`` set, every data request runs on a pool of the export's own and the
graph worker waits at most that long for it: a graph that stalls (a breakpoint never resumed, a
hung host device) answers ETIMEDOUT, which the block layer passes to the program unchanged,
instead of blocking it forever (the kernel's own FUSE request timeout is 0, that is none, here).
The stalled call itself goes on in its pool thread, with the worker's buffer (the worker takes a
new one); a write that timed out may still land later, as with a disk whose command timed out.
No request takes the direct path then (it could not be timed out).
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
from rig.core.buffers import BufferPool, aligned_buffer, buffer_address
from rig.drivers.export.direct import DirectPath, Replies
from rig.drivers.ffi import aio
from rig.drivers.ffi.calls import bind, library
from rig.drivers.ffi.libc import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    FALLOC_FL_ZERO_RANGE,
    LIBC,
)
from rig.drivers.ffi.libfuse import (
    FI_DIRECT_IO,
    FI_KEEP_CACHE,
    FUSE_CAP_SPLICE_READ,
    FUSE_SET_ATTR_GID,
    FUSE_SET_ATTR_MODE,
    FUSE_SET_ATTR_SIZE,
    FUSE_SET_ATTR_UID,
    LIBFUSE_LOWLEVEL,
    FuseConnInfo,
    FuseEntryParam,
    FuseFileInfo,
    Stat,
    Statvfs,
)

FILE_NAME = "disk"
#: Inode numbers: the root directory is FUSE_ROOT_ID.
ROOT_INO = 1
FILE_INO = 2
#: Seconds the kernel may cache the file's attributes and name (as libfuse's high level did).
_TTL = 1.0
#: Pool threads for timed requests: libfuse's ``max_threads`` plus room for stalled ones.
_TIMED_WORKERS = 16
_T = TypeVar("_T")
#: Each worker's buffer: FUSE's largest READ or WRITE with libfuse3 (a larger one, which only a
#: reader of the FUSE file itself could ask for, gets a fresh buffer).
_WORKER_BUF = 1 << 20
#: Replies and copies up to this size keep the GIL (a larger copy would hold up the others).
_HOLD_GIL_BELOW = 64 << 10


def fuse_library() -> ctypes.CDLL:
    """libfuse3 (``libfuse3.so.3``), loaded once per process."""
    return library("fuse3")


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


class _Workers:
    """The export's graph workers: daemon threads that run the requests the FUSE thread hands
    them (``put(fn, *args)``), each to its end, in the order handed."""

    def __init__(self, workers: int) -> None:
        self._tasks: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = \
            queue.SimpleQueue()
        self._count = workers
        for n in range(workers):
            threading.Thread(target=self._work, name=f"rig-export-{n}", daemon=True).start()

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            task[0](*task[1])

    def put(self, fn: Callable[..., Any], *args: Any) -> None:
        self._tasks.put((fn, args))

    def shutdown(self) -> None:
        for _ in range(self._count):
            self._tasks.put(None)


def _stat(mode: int, nlink: int, size: int, ino: int, t_ns: int) -> Stat:
    st = Stat(st_ino=ino, st_mode=mode, st_nlink=nlink, st_size=size,
              st_blocks=(size + 511) // 512, st_blksize=4096)
    for ts in (st.st_atim, st.st_mtim, st.st_ctim):
        ts.tv_sec, ts.tv_nsec = divmod(t_ns, 10**9)
    return st


class ExportOperations:
    """libfuse3 low-level callbacks serving ``backend`` as the single file ``/disk``: each
    method is one ``struct fuse_lowlevel_ops`` slot (:data:`~rig.drivers.ffi.libfuse.CALLBACKS`
    has their C signatures) and answers its ``req``."""

    def __init__(self, backend: BlockBackend, *, max_write: int = 0,
                 request_timeout: float = 0.0, workers: int = 8) -> None:
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
        #: What the kernel and libfuse agreed on (set in ``init``); 0 until mounted.
        self.negotiated_max_write = 0
        #: The capabilities libfuse asked the kernel for (``fuse_conn_info.want``).
        self.negotiated_want = 0
        #: FUSE fsync requests seen (each is one backend flush).
        self.fsync_count = 0
        fuse = bind(fuse_library(), LIBFUSE_LOWLEVEL)
        self._reply_err = fuse["fuse_reply_err"]
        self._reply_buf = fuse["fuse_reply_buf"]
        # The per-request calls of a 4 KiB request keep the GIL: giving it up and taking it
        # back around a short writev or memcpy costs more (another worker wakes up and takes
        # it in between) than the call. Measured: 20-40 % less CPU per request at QD16.
        held = bind(ctypes.PyDLL(fuse_library()._name), LIBFUSE_LOWLEVEL)
        self._reply_buf_held = held["fuse_reply_buf"]
        self._reply_write = held["fuse_reply_write"]
        memcpy = {"memcpy": LIBC["memcpy"]}
        self._memcpy_held = bind(ctypes.PyDLL(library("c")._name), memcpy)["memcpy"]
        self._memcpy = bind(library("c"), memcpy)["memcpy"]
        self._reply_none = fuse["fuse_reply_none"]
        self._reply_entry = fuse["fuse_reply_entry"]
        self._reply_attr = fuse["fuse_reply_attr"]
        self._reply_open = fuse["fuse_reply_open"]
        self._reply_statfs = fuse["fuse_reply_statfs"]
        self._add_direntry = fuse["fuse_add_direntry"]
        t = time.time_ns()
        self._file_attr = _stat(stat.S_IFREG | 0o600, 1, self._size, FILE_INO, t)
        self._dir_attr = _stat(stat.S_IFDIR | 0o700, 2, 0, ROOT_INO, t)
        self._entry = FuseEntryParam(ino=FILE_INO, attr=self._file_attr, attr_timeout=_TTL,
                                     entry_timeout=_TTL)
        self._file_attr_p = ctypes.addressof(self._file_attr)
        self._dir_attr_p = ctypes.addressof(self._dir_attr)
        self._entry_p = ctypes.addressof(self._entry)
        self._local = threading.local()
        self._workers = _Workers(workers)
        #: Buffers a WRITE's data waits in for its graph worker.
        self._write_bufs = BufferPool(_WORKER_BUF, keep=2 * workers)
        #: Small requests the graph passes through, by native AIO (None: off, or with a
        #: request timeout, whose pool the direct path would bypass).
        self.direct: DirectPath | None = None
        if self._pool is None and aio.available():
            replies = Replies(fuse["fuse_reply_buf"], fuse["fuse_reply_write"],
                              held["fuse_reply_buf"], held["fuse_reply_write"])
            self.direct = DirectPath(backend, replies, self._fail)

    # ------------------------------------------------------------------ lifecycle
    def _call(self, what: str, fn: Callable[..., _T], *args: Any,
              abandon: Callable[[], None] | None = None) -> _T:
        """``fn(*args)``, or ETIMEDOUT (:class:`_TimedOut`) after ``request_timeout`` seconds if
        one is set. A timed-out call goes on; ``abandon`` then runs once it has ended."""
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

    def _internal_error(self, what: str, e: BaseException) -> OSError:
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

    def _fail(self, req: int, what: str, e: BaseException) -> None:
        """Answer ``req`` with the error ``e`` stands for."""
        if isinstance(e, _TimedOut):
            # The stalled call goes on with this worker's buffer: the worker takes a new one.
            self._local.__dict__.pop("buf", None)
        if not isinstance(e, OSError):
            e = self._internal_error(what, e)
        code = e.errno if isinstance(e.errno, int) and e.errno > 0 else errno.EINVAL
        self._reply_err(req, code)

    def watch(self, fuse_fd: int) -> None:
        """The FUSE connection's descriptor, once mounted: the direct path looks there for
        requests waiting (:meth:`~rig.drivers.export.direct.DirectPath.watch`)."""
        if self.direct is not None:
            self.direct.watch(fuse_fd)

    def close_direct(self) -> None:
        """End the direct path once the FUSE loop has ended: its requests in flight are
        answered first (they must be, before the session goes)."""
        direct, self.direct = self.direct, None
        if direct is not None and not direct.close():
            sys.stderr.write("rig export: requests on the direct path were still in flight "
                             "after 30 s\n")

    def stop_timed_requests(self) -> None:
        """End the graph workers and stop taking timed requests (stalled ones go on; their
        threads are not joined)."""
        self._workers.shutdown()
        if self._pool is not None:
            self._pool.shutdown()

    def init(self, userdata: int, conn_p: int) -> None:
        """Lower ``max_write`` if asked and record what was negotiated."""
        try:
            self._pin()
            conn = FuseConnInfo.from_address(conn_p)
            if self._max_write_wanted and conn.max_write > self._max_write_wanted:
                conn.max_write = self._max_write_wanted
            # Requests are read into memory, not spliced into a pipe: with splice, a WRITE's
            # data waits in the pipe for one more read(2) (fuse_buf_copy) and every request
            # costs a splice(2) and a read(2). Measured with the direct path: 4 KiB QD1
            # writes +3-9 %, reads +5 %, QD16 and 1 MiB the same or better.
            conn.want &= ~FUSE_CAP_SPLICE_READ
            self.negotiated_max_write = int(conn.max_write)
            self.negotiated_want = int(conn.want)
        except BaseException as e:  # nothing to answer: say it, do not raise into C
            self._internal_error("init", e)

    def destroy(self, userdata: int) -> None:
        pass

    # ------------------------------------------------------------------ namespace
    def lookup(self, req: int, parent: int, name: bytes) -> None:
        if parent == ROOT_INO and name == FILE_NAME.encode():
            self._reply_entry(req, self._entry_p)
        else:
            self._reply_err(req, errno.ENOENT)

    def forget(self, req: int, ino: int, nlookup: int) -> None:
        self._reply_none(req)

    def getattr(self, req: int, ino: int, fi: int) -> None:
        if ino == FILE_INO:
            self._reply_attr(req, self._file_attr_p, _TTL)
        elif ino == ROOT_INO:
            self._reply_attr(req, self._dir_attr_p, _TTL)
        else:
            self._reply_err(req, errno.ENOENT)

    def setattr(self, req: int, ino: int, attr: int, to_set: int, fi: int) -> None:
        """Only the size can be "set", to what it is (the export has a fixed size); times are
        ignored; mode and owner are not supported."""
        if ino != FILE_INO:
            self._reply_err(req, errno.EPERM)
        elif to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID):
            self._reply_err(req, errno.ENOSYS)
        elif to_set & FUSE_SET_ATTR_SIZE and Stat.from_address(attr).st_size != self._size:
            self._reply_err(req, errno.EPERM)
        else:
            self._reply_attr(req, self._file_attr_p, _TTL)

    def open(self, req: int, ino: int, fi_p: int) -> None:
        """Every open gets FOPEN_DIRECT_IO: no FUSE page cache can hide a fault."""
        if ino != FILE_INO:
            self._reply_err(req, errno.EISDIR if ino == ROOT_INO else errno.ENOENT)
            return
        fi = FuseFileInfo.from_address(fi_p)
        fi.bits = (fi.bits | FI_DIRECT_IO) & ~FI_KEEP_CACHE
        fi.fh = 0
        self._reply_open(req, fi_p)

    def opendir(self, req: int, ino: int, fi_p: int) -> None:
        if ino != ROOT_INO:
            self._reply_err(req, errno.ENOTDIR)
        else:
            self._reply_open(req, fi_p)

    def readdir(self, req: int, ino: int, size: int, off: int, fi_p: int) -> None:
        """``.``, ``..`` and ``disk``, from entry ``off`` on, as many as fit in ``size``."""
        if ino != ROOT_INO:
            self._reply_err(req, errno.ENOTDIR)
            return
        names = ((b".", self._dir_attr), (b"..", self._dir_attr), (FILE_NAME.encode(),
                                                                   self._file_attr))
        buf = ctypes.create_string_buffer(max(size, 1))
        used = 0
        for i in range(max(off, 0), len(names)):
            name, attr = names[i]
            need = self._add_direntry(req, None, 0, name, None, 0)
            if used + need > size:
                break
            self._add_direntry(req, ctypes.addressof(buf) + used, size - used, name,
                               ctypes.addressof(attr), i + 1)
            used += need
        self._reply_buf(req, buf, used)

    def releasedir(self, req: int, ino: int, fi: int) -> None:
        self._reply_err(req, 0)

    def flush(self, req: int, ino: int, fi: int) -> None:
        """FUSE ``flush`` is close(2), not a cache flush: nothing to do."""
        self._reply_err(req, 0)

    def release(self, req: int, ino: int, fi: int) -> None:
        self._reply_err(req, 0)

    def statfs(self, req: int, ino: int) -> None:
        blocks = self._size // 4096
        st = Statvfs(f_bsize=4096, f_frsize=4096, f_blocks=blocks, f_namemax=255)
        self._reply_statfs(req, ctypes.addressof(st))

    # ------------------------------------------------------------------ data
    def _pin(self) -> None:
        """Keep this thread's Python thread state (see :meth:`_first_request`)."""
        local = self._local
        if not getattr(local, "pinned", False):
            ctypes.pythonapi.PyGILState_Ensure()
            local.pinned = True

    def _first_request(self) -> memoryview:
        """This worker thread's buffer, made on its first request (or after a timed-out request
        kept the last one). On the first, the thread's Python thread state is pinned for good:
        ctypes makes one for each callback on a thread Python did not start and deletes it on
        return; one more ``PyGILState_Ensure``, never released, keeps it (a few KiB per worker,
        left when the worker ends). That saves the making per request, and lets the worker's
        ``threading.local`` data (the buffer) last."""
        self._pin()
        local = self._local
        buf = aligned_buffer(_WORKER_BUF)
        local.buf = buf
        local.addr = buffer_address(buf)
        return buf

    def read(self, req: int, ino: int, size: int, off: int, fi: int) -> None:
        """READ: by the direct path, or handed to a graph worker (:meth:`_read`)."""
        try:
            n = self._size - off
            if n > size:
                n = size
            if n <= 0:
                self._reply_buf(req, None, 0)
                return
            direct = self.direct
            if direct is not None and direct.read(req, off, n):
                return
            self._workers.put(self._read, req, off, n)
        except BaseException as e:
            self._fail(req, "read", e)

    def _read(self, req: int, off: int, n: int) -> None:
        """A graph worker's READ: the backend reads into the worker's buffer, and libfuse
        sends it from there."""
        local = self._local
        try:
            buf = local.buf
        except AttributeError:
            buf = self._first_request()
        try:
            if n > _WORKER_BUF:
                buf = aligned_buffer(n)
                addr = buffer_address(buf)
            else:
                addr = local.addr
            if self._pool is None:
                self._backend.preadv(off, [buf[:n]])
            else:
                self._call("read", self._backend.preadv, off, [buf[:n]])
            if n <= _HOLD_GIL_BELOW:
                self._reply_buf_held(req, addr, n)
            else:
                self._reply_buf(req, addr, n)
        except BaseException as e:
            self._fail(req, "read", e)

    def write(self, req: int, ino: int, data: int, size: int, off: int, fi: int) -> None:
        """WRITE: its data (at ``data``, in libfuse's request buffer, valid only during this
        call) is copied once, into a direct-path slot or a pooled buffer; then it is written by
        the direct path, or by a graph worker (:meth:`_write`)."""
        try:
            if off + size > self._size:
                raise OSError(errno.ENOSPC, "write beyond the end of the export")
            direct = self.direct
            if direct is not None:
                slot = direct.take_write(data, size)
                if slot is not None:
                    try:
                        taken = direct.submit_write(slot, req, off, size)
                    except BaseException:
                        direct.release(slot)
                        raise
                    if not taken:
                        self._workers.put(self._write, req, off, size, slot.buf, slot)
                    return
            buf = self._write_bufs.get() if size <= _WORKER_BUF else aligned_buffer(size)
            (self._memcpy_held if size <= _HOLD_GIL_BELOW else self._memcpy)(
                buffer_address(buf), data, size)
            self._workers.put(self._write, req, off, size, buf, None)
        except BaseException as e:
            self._fail(req, "write", e)

    def _write(self, req: int, off: int, size: int, buf: memoryview, slot: Any) -> None:
        """A graph worker's WRITE of the data in ``buf`` (a direct-path ``slot``'s or a pooled
        one), given back when written; a write that timed out keeps it (it may still land)."""
        keep = False
        try:
            if self._pool is None:
                self._backend.pwritev(off, [buf[:size]])
            else:
                self._call("write", self._backend.pwritev, off, [buf[:size]])
            self._reply_write(req, size)
        except _TimedOut as e:
            keep = True
            self._fail(req, "write", e)
        except BaseException as e:
            self._fail(req, "write", e)
        finally:
            if not keep:
                self._give_back(buf, slot)

    def _give_back(self, buf: memoryview, slot: Any) -> None:
        if slot is not None and self.direct is not None:
            self.direct.release(slot)
        elif buf.nbytes == _WORKER_BUF:
            self._write_bufs.put(buf)

    def fsync(self, req: int, ino: int, datasync: int, fi: int) -> None:
        """A block-device fsync arrives here (datasync=0): one flush of the graph, by a graph
        worker."""
        self._workers.put(self._fsync, req)

    def _fsync(self, req: int) -> None:
        try:
            if not hasattr(self._local, "buf"):
                self._first_request()
            self.fsync_count += 1
            self._call("flush", self._backend.flush)
            self._reply_err(req, 0)
        except BaseException as e:
            self._fail(req, "flush", e)

    def fallocate(self, req: int, ino: int, mode: int, offset: int, size: int, fi: int) -> None:
        """Loop's discard (punch hole) and write-zeroes (zero range) map to the backend, by a
        graph worker."""
        self._workers.put(self._fallocate, req, mode, offset, size)

    def _fallocate(self, req: int, mode: int, offset: int, size: int) -> None:
        try:
            if offset < 0 or offset + size > self._size:
                raise OSError(errno.EINVAL, "range beyond the end of the export")
            if mode == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE:
                self._call("discard", self._backend.discard, offset, size)
            elif mode & ~FALLOC_FL_KEEP_SIZE == FALLOC_FL_ZERO_RANGE:
                self._call("write-zeroes", self._backend.write_zeroes, offset, size)
            elif mode & ~FALLOC_FL_KEEP_SIZE:
                raise OSError(errno.EOPNOTSUPP, f"fallocate mode {mode:#x}")
            self._reply_err(req, 0)
        except BaseException as e:
            self._fail(req, "fallocate", e)
