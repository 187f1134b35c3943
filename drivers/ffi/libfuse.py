"""libfuse3 functions and structs the FUSE export calls itself, declared as data.

The export loads libfuse3 itself (``library("fuse3")``) and binds these tables to it with
:func:`rig.drivers.ffi.calls.bind` (the per-request ones also through ``ctypes.PyDLL``, which
keeps the GIL). They are called directly: the ``fuse_reply_*`` functions return ``-errno``,
not -1 with errno. The structs are libfuse 3.14's on x86_64 (Debian 13's);
``tests/drivers/test_export_lowlevel.py`` checks their sizes.
"""

from __future__ import annotations

import ctypes
from typing import Any, Final

from rig.drivers.ffi.calls import Signature

# ------------------------------------------------------------------ the low-level API (3.12+)
#: The export's own session on libfuse3's low-level API (``fuse_lowlevel.h``): it answers each
#: request itself (``fuse_reply_*``), with no path lookup, no high-level layer and no mfusepy
#: wrapper in between. Replies return ``-errno``.
_P = ctypes.c_void_p
LIBFUSE_LOWLEVEL: Final[dict[str, Signature]] = {
    "fuse_session_new": ((_P, _P, ctypes.c_size_t, _P), _P),
    "fuse_session_mount": ((_P, ctypes.c_char_p), ctypes.c_int),
    "fuse_session_loop": ((_P,), ctypes.c_int),
    "fuse_session_fd": ((_P,), ctypes.c_int),
    "fuse_session_exit": ((_P,), None),
    "fuse_session_unmount": ((_P,), None),
    "fuse_session_destroy": ((_P,), None),
    "fuse_reply_err": ((_P, ctypes.c_int), ctypes.c_int),
    "fuse_reply_none": ((_P,), None),
    "fuse_reply_entry": ((_P, _P), ctypes.c_int),
    "fuse_reply_attr": ((_P, _P, ctypes.c_double), ctypes.c_int),
    "fuse_reply_open": ((_P, _P), ctypes.c_int),
    "fuse_reply_write": ((_P, ctypes.c_size_t), ctypes.c_int),
    "fuse_reply_buf": ((_P, _P, ctypes.c_size_t), ctypes.c_int),
    "fuse_reply_statfs": ((_P, _P), ctypes.c_int),
    "fuse_add_direntry": ((_P, _P, ctypes.c_size_t, ctypes.c_char_p, _P, ctypes.c_int64),
                          ctypes.c_size_t),
}

#: ``fuse_conn_info.want`` / ``capable`` bits (fuse_common.h) the export looks at.
FUSE_CAP_SPLICE_READ: Final = 1 << 9
FUSE_CAP_ASYNC_DIO: Final = 1 << 15
#: ``setattr``'s ``to_set`` bits (fuse_lowlevel.h).
FUSE_SET_ATTR_MODE: Final = 1 << 0
FUSE_SET_ATTR_UID: Final = 1 << 1
FUSE_SET_ATTR_GID: Final = 1 << 2
FUSE_SET_ATTR_SIZE: Final = 1 << 3
#: ``fuse_file_info``'s bit field word: ``writepage``, then ``direct_io``, then ``keep_cache``.
FI_DIRECT_IO: Final = 1 << 1
FI_KEEP_CACHE: Final = 1 << 2


class FuseArgs(ctypes.Structure):
    _fields_ = [("argc", ctypes.c_int), ("argv", ctypes.POINTER(ctypes.c_char_p)),
                ("allocated", ctypes.c_int)]


class FuseFileInfo(ctypes.Structure):
    """``struct fuse_file_info`` (3.14): the bit fields as one word (``bits``)."""

    _fields_ = [("flags", ctypes.c_int), ("bits", ctypes.c_uint32), ("padding2", ctypes.c_uint32),
                ("fh", ctypes.c_uint64), ("lock_owner", ctypes.c_uint64),
                ("poll_events", ctypes.c_uint32)]


class FuseConnInfo(ctypes.Structure):
    """``struct fuse_conn_info`` (3.0 to 3.16)."""

    _fields_ = [("proto_major", ctypes.c_uint), ("proto_minor", ctypes.c_uint),
                ("max_write", ctypes.c_uint), ("max_read", ctypes.c_uint),
                ("max_readahead", ctypes.c_uint), ("capable", ctypes.c_uint),
                ("want", ctypes.c_uint), ("max_background", ctypes.c_uint),
                ("congestion_threshold", ctypes.c_uint), ("time_gran", ctypes.c_uint),
                ("reserved", ctypes.c_uint * 22)]


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_int64)]


class Stat(ctypes.Structure):
    """``struct stat`` of x86_64 and aarch64 glibc is not the same: this is x86_64's."""

    _fields_ = [("st_dev", ctypes.c_uint64), ("st_ino", ctypes.c_uint64),
                ("st_nlink", ctypes.c_uint64), ("st_mode", ctypes.c_uint32),
                ("st_uid", ctypes.c_uint32), ("st_gid", ctypes.c_uint32),
                ("pad0", ctypes.c_int32), ("st_rdev", ctypes.c_uint64),
                ("st_size", ctypes.c_int64), ("st_blksize", ctypes.c_int64),
                ("st_blocks", ctypes.c_int64), ("st_atim", Timespec), ("st_mtim", Timespec),
                ("st_ctim", Timespec), ("reserved", ctypes.c_int64 * 3)]


class FuseEntryParam(ctypes.Structure):
    _fields_ = [("ino", ctypes.c_uint64), ("generation", ctypes.c_uint64), ("attr", Stat),
                ("attr_timeout", ctypes.c_double), ("entry_timeout", ctypes.c_double)]


class Statvfs(ctypes.Structure):
    _fields_ = [("f_bsize", ctypes.c_ulong), ("f_frsize", ctypes.c_ulong),
                ("f_blocks", ctypes.c_uint64), ("f_bfree", ctypes.c_uint64),
                ("f_bavail", ctypes.c_uint64), ("f_files", ctypes.c_uint64),
                ("f_ffree", ctypes.c_uint64), ("f_favail", ctypes.c_uint64),
                ("f_fsid", ctypes.c_ulong), ("f_flag", ctypes.c_ulong),
                ("f_namemax", ctypes.c_ulong), ("spare", ctypes.c_int * 6)]


#: ``struct fuse_lowlevel_ops`` of 3.14, in order: every slot a function pointer (NULL: libfuse
#: answers ENOSYS, or its default). The export fills the ones it serves.
LOWLEVEL_OPS: Final = (
    "init", "destroy", "lookup", "forget", "getattr", "setattr", "readlink", "mknod", "mkdir",
    "unlink", "rmdir", "symlink", "rename", "link", "open", "read", "write", "flush", "release",
    "fsync", "opendir", "readdir", "releasedir", "fsyncdir", "statfs", "setxattr", "getxattr",
    "listxattr", "removexattr", "access", "create", "getlk", "setlk", "bmap", "ioctl", "poll",
    "write_buf", "retrieve_reply", "forget_multi", "flock", "fallocate", "readdirplus",
    "copy_file_range", "lseek",
)


class FuseLowlevelOps(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in LOWLEVEL_OPS]


_U64, _SZ, _OFF, _INT = ctypes.c_uint64, ctypes.c_size_t, ctypes.c_int64, ctypes.c_int
#: The C signature of each callback the export serves (all return void): ``(argtypes)``.
#: ``req``, ``fi``, ``conn`` and buffers are plain addresses (``void *``), the cheapest for
#: ctypes to pass.
CALLBACKS: Final[dict[str, tuple[Any, ...]]] = {
    "init": (_P, _P),
    "destroy": (_P,),
    "lookup": (_P, _U64, ctypes.c_char_p),
    "forget": (_P, _U64, _U64),
    "getattr": (_P, _U64, _P),
    "setattr": (_P, _U64, _P, _INT, _P),
    "open": (_P, _U64, _P),
    "read": (_P, _U64, _SZ, _OFF, _P),
    "flush": (_P, _U64, _P),
    "release": (_P, _U64, _P),
    "fsync": (_P, _U64, _INT, _P),
    "opendir": (_P, _U64, _P),
    "readdir": (_P, _U64, _SZ, _OFF, _P),
    "releasedir": (_P, _U64, _P),
    "statfs": (_P, _U64),
    # write, not write_buf: the data comes as a plain pointer into libfuse's request buffer
    # (requests are read, not spliced), so one memcpy takes it, with no fuse_bufvec to fill.
    "write": (_P, _U64, _P, _SZ, _OFF, _P),
    "fallocate": (_P, _U64, _INT, _OFF, _OFF, _P),
}
