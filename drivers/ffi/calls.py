"""The one loader of C libraries and the one errno checker of every foreign call.

A C library's functions are declared as data, one table per library (:mod:`.libc`,
:mod:`.libfuse`): ``name -> (argtypes, restype)``. :func:`bind` loads them from the library,
typed by the table; nothing else sets ``argtypes``. The ioctls (:mod:`.ioctls`) go through
``fcntl.ioctl`` and the same checker.

**Errors.** :func:`checked` makes a call and turns a failure into ``OSError(errno, "NAME:
strerror")`` (Python picks the subclass: ``FileNotFoundError`` for ENOENT...), without the
traceback of the call. A call fails when it raises ``OSError`` (``fcntl.ioctl``) or returns -1
with ``errno`` set (a libc function bound here: libraries are loaded with ``use_errno``, so
``errno`` is read right after the call, per thread).

**EINTR policy: a call interrupted by a signal is made again**, as Python's own ``os`` and
``fcntl.fcntl`` do since PEP 475. Python's signal handlers run before the retry (``fcntl.ioctl``
runs them before it raises; after a ctypes call the interpreter runs them at the next bytecode),
so a handler that raises (Ctrl-C's KeyboardInterrupt, a test timeout) ends the call with its own
exception, and a handler that returns lets the call go on. No caller ever sees EINTR.

Hot paths that must not pay for a Python layer (the FUSE export's allocator and buffer copy,
called per request) call the bound ctypes functions directly and check their own return codes,
which are not ``errno`` style (``posix_memalign`` returns the error, ``fuse_buf_copy`` returns
``-errno``).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

#: ``(argtypes, restype)`` of one C function; ``restype`` None is ``void``.
Signature: TypeAlias = tuple[Sequence[Any], Any]

#: The sonames tried first: ``ctypes.util.find_library`` runs ldconfig (a process, ~20 ms), which
#: would land on the first request that needs the library (a write-zeroes' fallocate).
_SONAMES = {"c": "libc.so.6", "fuse3": "libfuse3.so.3"}
_LIBRARIES: dict[str, ctypes.CDLL] = {}


def library(name: str) -> ctypes.CDLL:
    """The C library ``name`` (``"c"`` is libc), loaded once per process, with ``use_errno``."""
    lib = _LIBRARIES.get(name)
    if lib is None:
        try:
            lib = ctypes.CDLL(_SONAMES[name], use_errno=True)
        except (KeyError, OSError):
            # ctypes.util imports subprocess, shutil and tempfile: only for an unknown soname.
            from ctypes.util import find_library

            path = find_library(name) or f"lib{name}.so"
            lib = ctypes.CDLL(path, use_errno=True)
        _LIBRARIES[name] = lib
    return lib


def bind(lib: ctypes.CDLL, table: Mapping[str, Signature]) -> dict[str, Callable[..., Any]]:
    """Every function of ``table`` from ``lib``, typed as the table says. Each is a function
    object of its own (``lib[name]``), so a table never retypes a function someone else bound
    from the same library (mfusepy's libfuse)."""
    bound: dict[str, Callable[..., Any]] = {}
    for name, (argtypes, restype) in table.items():
        fn = lib[name]
        fn.argtypes = list(argtypes)
        fn.restype = restype
        bound[name] = fn
    return bound


def os_error(name: str, code: int | None) -> OSError:
    """The one form of a failed foreign call: ``OSError(code, "NAME: strerror")`` (EIO if the
    call gave no errno)."""
    code = code or errno.EIO
    return OSError(code, f"{name}: {os.strerror(code)}")


def checked(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` for foreign call ``name``: its result, or :func:`os_error`; EINTR is
    retried (the module's policy)."""
    while True:
        try:
            result = fn(*args)
        except InterruptedError:
            continue
        except OSError as e:
            raise os_error(name, e.errno) from None
        if result != -1:
            return result
        code = ctypes.get_errno()
        if code != errno.EINTR:
            raise os_error(name, code)
