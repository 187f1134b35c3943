"""libc calls Python's os module lacks, declared as data; errno is checked in one place
(:func:`rig.drivers.ffi.calls.checked`, which retries EINTR)."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any, Final

from rig.drivers.ffi.calls import Signature, bind, checked, library

FALLOC_FL_KEEP_SIZE: Final = 0x01
FALLOC_FL_PUNCH_HOLE: Final = 0x02
FALLOC_FL_ZERO_RANGE: Final = 0x10
SYNC_FILE_RANGE_WAIT_BEFORE: Final = 0x1
SYNC_FILE_RANGE_WRITE: Final = 0x2
SYNC_FILE_RANGE_WAIT_AFTER: Final = 0x4
PR_SET_PDEATHSIG: Final = 1

#: name -> (argtypes, restype): every libc function the rig calls through ctypes.
LIBC: Final[dict[str, Signature]] = {
    "fallocate": ((ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64), ctypes.c_int),
    "sync_file_range": ((ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint),
                        ctypes.c_int),
    "prctl": ((ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong),
              ctypes.c_int),
    # The FUSE export's zero-copy reads: memory libfuse sends and then frees.
    "posix_memalign": ((ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_size_t),
                       ctypes.c_int),
    "malloc": ((ctypes.c_size_t,), ctypes.c_void_p),
    # The FUSE export takes a WRITE's data out of libfuse's request buffer.
    "memcpy": ((ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t), ctypes.c_void_p),
    "free": ((ctypes.c_void_p,), None),
}

_FUNCS: Final = bind(library("c"), LIBC)


def function(name: str) -> Callable[..., Any]:
    """The bound C function ``name`` itself, unchecked: for hot paths that check their own
    return codes (the FUSE export's allocator)."""
    return _FUNCS[name]


def call(name: str, *args: int) -> int:
    """Call libc ``name``; a -1 return raises OSError with errno (EINTR is retried)."""
    result: int = checked(name, _FUNCS[name], *args)
    return result


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    call("fallocate", fd, mode, offset, length)


def write_back(fd: int, offset: int, length: int) -> None:
    """Write the dirty page cache of ``[offset, offset + length)`` to the device and wait for it
    (``sync_file_range`` with WAIT_BEFORE, WRITE and WAIT_AFTER; no device cache flush)."""
    call("sync_file_range", fd, offset, length,
         SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER)


def set_parent_death_signal(signal: int) -> None:
    """``prctl(PR_SET_PDEATHSIG, signal)``: the kernel sends ``signal`` to this process when the
    thread that forked it dies. For a child between fork and exec, where nothing may raise, so
    unchecked: the caller compares ``os.getppid()`` afterwards, which covers the parent dying
    before this took effect."""
    _FUNCS["prctl"](PR_SET_PDEATHSIG, signal, 0, 0, 0)
