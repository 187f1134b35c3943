"""libfuse3 functions and structs the FUSE export calls itself, declared as data.

mfusepy loads libfuse3 (the export uses its library object, so both talk to one libfuse); the
export binds this table to it with :func:`rig.drivers.ffi.calls.bind`. These are called per
request, directly: ``fuse_buf_copy`` returns ``-errno``, not -1 with errno.
"""

from __future__ import annotations

import ctypes
from typing import Final

from rig.drivers.ffi.calls import Signature

#: name -> (argtypes, restype). The ``void *`` arguments are ``struct fuse_bufvec *``.
LIBFUSE: Final[dict[str, Signature]] = {
    "fuse_buf_copy": ((ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int), ctypes.c_ssize_t),
    "fuse_buf_size": ((ctypes.c_void_p,), ctypes.c_size_t),
}


# ``struct fuse_buf`` and ``struct fuse_bufvec`` (fuse_common.h, 3.x: ``buf`` is an inline
# array of one; mfusepy declares it as a pointer, so it has its own, unusable here).
class FuseBuf(ctypes.Structure):
    _fields_ = [("size", ctypes.c_size_t), ("flags", ctypes.c_int), ("mem", ctypes.c_void_p),
                ("fd", ctypes.c_int), ("pos", ctypes.c_int64)]


class FuseBufvec(ctypes.Structure):
    _fields_ = [("count", ctypes.c_size_t), ("idx", ctypes.c_size_t), ("off", ctypes.c_size_t),
                ("buf", FuseBuf * 1)]
