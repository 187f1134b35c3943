"""Linux native AIO (``io_setup``/``io_submit``/``io_getevents``), through ``syscall(2)``.

The export's direct path (:mod:`rig.drivers.export.direct`) submits a request's read or write
of the image file here and lets the kernel complete it while the FUSE worker goes back for the
next request; one thread reaps the completions in batches. With ``O_DIRECT`` the I/O is truly
asynchronous; on a buffered file ``io_submit`` does it before returning (still correct).

No libaio: the three system calls and two structures are all there is to it (``linux/aio_abi.h``).
The syscall numbers are per architecture; :func:`available` is False on one not listed here, and
the export then serves every request as before.
"""

from __future__ import annotations

import ctypes
import errno
import platform
from typing import Final

from rig.drivers.ffi.calls import library, os_error

IOCB_CMD_PREAD: Final = 0
IOCB_CMD_PWRITE: Final = 1

#: (io_setup, io_destroy, io_getevents, io_submit) per machine.
_SYSCALLS: Final = {
    "x86_64": (206, 207, 208, 209),
    "aarch64": (0, 1, 4, 2),
}


class Iocb(ctypes.Structure):
    """``struct iocb`` (little-endian layout: ``aio_key`` before ``aio_rw_flags``)."""

    _fields_ = [
        ("aio_data", ctypes.c_uint64),
        ("aio_key", ctypes.c_uint32),
        ("aio_rw_flags", ctypes.c_int32),
        ("aio_lio_opcode", ctypes.c_uint16),
        ("aio_reqprio", ctypes.c_int16),
        ("aio_fildes", ctypes.c_uint32),
        ("aio_buf", ctypes.c_uint64),
        ("aio_nbytes", ctypes.c_uint64),
        ("aio_offset", ctypes.c_int64),
        ("aio_reserved2", ctypes.c_uint64),
        ("aio_flags", ctypes.c_uint32),
        ("aio_resfd", ctypes.c_uint32),
    ]


class IoEvent(ctypes.Structure):
    """``struct io_event``: ``data`` is the iocb's ``aio_data``, ``res`` bytes or ``-errno``."""

    _fields_ = [
        ("data", ctypes.c_uint64),
        ("obj", ctypes.c_uint64),
        ("res", ctypes.c_int64),
        ("res2", ctypes.c_int64),
    ]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def available() -> bool:
    """Whether this machine's syscall numbers are known (the kernel may still refuse)."""
    return platform.machine() in _SYSCALLS


class AioContext:
    """One kernel AIO context for up to ``depth`` requests in flight."""

    def __init__(self, depth: int) -> None:
        nrs = _SYSCALLS.get(platform.machine())
        if nrs is None:
            raise OSError(errno.ENOSYS, f"native AIO: unknown machine {platform.machine()}")
        self._setup_nr, self._destroy_nr, self._getevents_nr, self._submit_nr = nrs
        # Its own function object: the argument types differ per call, so none are declared.
        # Every call gives the interpreter lock up, io_submit too: an O_DIRECT write spends
        # ~25 us in it (the file system's write path, the disk's doorbell), time in which the
        # thread answering completions can run (measured at 4 KiB QD16: writes +9 %, reads the
        # same, against keeping the lock through io_submit).
        self._syscall = library("c")["syscall"]
        self._syscall.restype = ctypes.c_long
        ctx = ctypes.c_ulong(0)
        if self._syscall(ctypes.c_long(self._setup_nr), ctypes.c_long(depth),
                         ctypes.byref(ctx)) < 0:
            raise os_error("io_setup", ctypes.get_errno())
        self._ctx: int | None = ctx.value
        self.depth = depth
        # The arguments of the per-request calls, made once (each ctypes object made per call
        # costs about as much as the call itself).
        self._arg_ctx = ctypes.c_ulong(ctx.value)
        self._arg_submit = ctypes.c_long(self._submit_nr)
        self._arg_getevents = ctypes.c_long(self._getevents_nr)
        self._arg_one = ctypes.c_long(1)
        self._timeout = _Timespec(0, 0)
        self._timeout_p = ctypes.byref(self._timeout)

    @staticmethod
    def one(iocb: Iocb) -> ctypes.Array[ctypes.c_void_p]:
        """The ``iocb **`` that :meth:`submit` takes for ``iocb`` (make it once, keep it)."""
        return (ctypes.c_void_p * 1)(ctypes.addressof(iocb))

    def submit(self, one: ctypes.Array[ctypes.c_void_p]) -> None:
        """Submit one request (``one``: from :meth:`one`); raises ``OSError`` if the kernel took
        none of it (EAGAIN: the context is full)."""
        while True:
            n = self._syscall(self._arg_submit, self._arg_ctx, self._arg_one, one)
            if n == 1:
                return
            code = ctypes.get_errno() if n < 0 else errno.EAGAIN
            if code != errno.EINTR:
                raise os_error("io_submit", code)

    def reap(self, events: ctypes.Array[IoEvent], timeout: float) -> int:
        """Wait up to ``timeout`` seconds for at least one completion; fills ``events`` and
        returns how many (0 on a timeout or an interrupted wait). One thread at a time."""
        if self._ctx is None:
            raise OSError(errno.EINVAL, "io_getevents: the AIO context is closed")
        ts = self._timeout
        ts.tv_sec = int(timeout)
        ts.tv_nsec = int(timeout % 1 * 1e9)
        n = self._syscall(self._arg_getevents, self._arg_ctx, self._arg_one,
                          ctypes.c_long(len(events)), events, self._timeout_p)
        if n < 0:
            code = ctypes.get_errno()
            if code == errno.EINTR:
                return 0
            raise os_error("io_getevents", code)
        return int(n)

    def close(self) -> None:
        """Destroy the context (the kernel waits for requests still in flight)."""
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            self._syscall(ctypes.c_long(self._destroy_nr), ctypes.c_ulong(ctx))

