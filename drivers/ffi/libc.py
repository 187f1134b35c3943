"""libc calls Python's os module lacks, declared as data; errno is checked in one place."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from typing import Any, Final

FALLOC_FL_KEEP_SIZE: Final = 0x01
FALLOC_FL_PUNCH_HOLE: Final = 0x02
FALLOC_FL_ZERO_RANGE: Final = 0x10
SYNC_FILE_RANGE_WAIT_BEFORE: Final = 0x1
SYNC_FILE_RANGE_WRITE: Final = 0x2
SYNC_FILE_RANGE_WAIT_AFTER: Final = 0x4

#: name -> (argtypes, restype)
SIGNATURES: Final[dict[str, tuple[list[Any], Any]]] = {
    "fallocate": ([ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64], ctypes.c_int),
    "sync_file_range": ([ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint],
                        ctypes.c_int),
}

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _load(name: str) -> Callable[..., int]:
    fn = getattr(_libc, name)
    fn.argtypes, fn.restype = SIGNATURES[name]
    return fn  # type: ignore[no-any-return]


_FUNCS: Final[dict[str, Callable[..., int]]] = {name: _load(name) for name in SIGNATURES}


def exception_from_errno(name: str) -> OSError:
    """The one place a libc errno becomes an exception."""
    code = ctypes.get_errno()
    return OSError(code, f"{name}: {os.strerror(code)}")


def call(name: str, *args: int) -> int:
    """Call libc ``name``; a -1 return raises OSError with errno (EINTR is retried)."""
    fn = _FUNCS[name]
    while True:
        ret = fn(*args)
        if ret != -1:
            return ret
        err = exception_from_errno(name)
        if err.errno != 4:  # EINTR
            raise err


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    call("fallocate", fd, mode, offset, length)


def write_back(fd: int, offset: int, length: int) -> None:
    """Write the dirty page cache of ``[offset, offset + length)`` to the device and wait for it
    (``sync_file_range`` with WAIT_BEFORE, WRITE and WAIT_AFTER; no device cache flush)."""
    call("sync_file_range", fd, offset, length,
         SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER)
