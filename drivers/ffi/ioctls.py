"""Every ioctl the host drivers use, declared as data; errors go through the one errno checker
(:func:`rig.drivers.ffi.calls.checked`: ``OSError(errno, "NAME: strerror")``, EINTR retried).

Numbers are computed from the Linux ``_IOC`` encoding (asm-generic/ioctl.h) so that a reader can
check each against the kernel header it comes from.
"""

from __future__ import annotations

import ctypes
import fcntl
import struct
from typing import Final

from rig.drivers.ffi.calls import checked

_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _ioc(direction: int, kind: int | str, nr: int, size: int) -> int:
    t = ord(kind) if isinstance(kind, str) else kind
    return (
        (direction << _IOC_DIRSHIFT)
        | (t << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def _io(kind: int | str, nr: int) -> int:
    return _ioc(_IOC_NONE, kind, nr, 0)


def _ior(kind: int | str, nr: int, size: int) -> int:
    return _ioc(_IOC_READ, kind, nr, size)


_SIZE_T = ctypes.sizeof(ctypes.c_size_t)

#: name -> request number. linux/fs.h (BLK*), linux/loop.h (LOOP_*), scsi/sg.h (SG_*),
#: linux/cdrom.h (CDROM*).
IOCTLS: Final[dict[str, int]] = {
    # linux/fs.h
    "BLKROSET": _io(0x12, 93),
    "BLKROGET": _io(0x12, 94),
    "BLKGETSIZE": _io(0x12, 96),
    "BLKFLSBUF": _io(0x12, 97),
    "BLKSSZGET": _io(0x12, 104),
    "BLKGETSIZE64": _ior(0x12, 114, _SIZE_T),
    "BLKDISCARD": _io(0x12, 119),
    "BLKIOMIN": _io(0x12, 120),
    "BLKIOOPT": _io(0x12, 121),
    "BLKPBSZGET": _io(0x12, 123),
    "BLKDISCARDZEROES": _io(0x12, 124),
    "BLKZEROOUT": _io(0x12, 127),
    "BLKSECTGET": _io(0x12, 103),
    "BLKGETDISKSEQ": _ior(0x12, 128, 8),
    # linux/loop.h
    "LOOP_SET_FD": 0x4C00,
    "LOOP_CLR_FD": 0x4C01,
    "LOOP_SET_STATUS64": 0x4C04,
    "LOOP_GET_STATUS64": 0x4C05,
    "LOOP_CHANGE_FD": 0x4C06,
    "LOOP_SET_CAPACITY": 0x4C07,
    "LOOP_SET_DIRECT_IO": 0x4C08,
    "LOOP_SET_BLOCK_SIZE": 0x4C09,
    "LOOP_CONFIGURE": 0x4C0A,
    "LOOP_CTL_ADD": 0x4C80,
    "LOOP_CTL_REMOVE": 0x4C81,
    "LOOP_CTL_GET_FREE": 0x4C82,
    # scsi/sg.h (not _IOC-encoded: sg predates that)
    "SG_SET_TIMEOUT": 0x2201,
    "SG_GET_TIMEOUT": 0x2202,
    "SG_GET_RESERVED_SIZE": 0x2272,
    "SG_SET_RESERVED_SIZE": 0x2275,
    "SG_GET_VERSION_NUM": 0x2282,
    "SG_IO": 0x2285,
    # linux/cdrom.h (not _IOC-encoded either)
    "CDROMEJECT": 0x5309,
    "CDROMCLOSETRAY": 0x5319,
    "CDROM_MEDIA_CHANGED": 0x5325,
    "CDROM_DRIVE_STATUS": 0x5326,
    "CDROM_DISC_STATUS": 0x5327,
    "CDROM_LOCKDOOR": 0x5329,
    "CDROM_GET_CAPABILITY": 0x5331,
}

# linux/loop.h flags
LO_FLAGS_READ_ONLY: Final = 1
LO_FLAGS_AUTOCLEAR: Final = 4
LO_FLAGS_PARTSCAN: Final = 8
LO_FLAGS_DIRECT_IO: Final = 16
LO_NAME_SIZE: Final = 64
LO_KEY_SIZE: Final = 32

# linux/cdrom.h: CDROM_DRIVE_STATUS / CDROM_DISC_STATUS answers, the slot argument
CDS_NO_INFO: Final = 0
CDS_NO_DISC: Final = 1
CDS_TRAY_OPEN: Final = 2
CDS_DRIVE_NOT_READY: Final = 3
CDS_DISC_OK: Final = 4
CDS_AUDIO: Final = 100
CDS_DATA_1: Final = 101
CDS_DATA_2: Final = 102
CDS_XA_2_1: Final = 103
CDS_XA_2_2: Final = 104
CDS_MIXED: Final = 105
CDSL_CURRENT: Final = 0x7FFFFFFF
#: CDROM_GET_CAPABILITY bits
CDC_CLOSE_TRAY: Final = 0x1
CDC_OPEN_TRAY: Final = 0x2
CDC_LOCK: Final = 0x4
CDC_MEDIA_CHANGED: Final = 0x80
CDC_DRIVE_STATUS: Final = 0x800


class LoopInfo64(ctypes.Structure):
    """struct loop_info64 (232 bytes)."""

    _fields_ = [
        ("lo_device", ctypes.c_uint64),
        ("lo_inode", ctypes.c_uint64),
        ("lo_rdevice", ctypes.c_uint64),
        ("lo_offset", ctypes.c_uint64),
        ("lo_sizelimit", ctypes.c_uint64),
        ("lo_number", ctypes.c_uint32),
        ("lo_encrypt_type", ctypes.c_uint32),
        ("lo_encrypt_key_size", ctypes.c_uint32),
        ("lo_flags", ctypes.c_uint32),
        ("lo_file_name", ctypes.c_char * LO_NAME_SIZE),
        ("lo_crypt_name", ctypes.c_char * LO_NAME_SIZE),
        ("lo_encrypt_key", ctypes.c_ubyte * LO_KEY_SIZE),
        ("lo_init", ctypes.c_uint64 * 2),
    ]


class LoopConfig(ctypes.Structure):
    """struct loop_config (304 bytes), for LOOP_CONFIGURE."""

    _fields_ = [
        ("fd", ctypes.c_uint32),
        ("block_size", ctypes.c_uint32),
        ("info", LoopInfo64),
        ("__reserved", ctypes.c_uint64 * 8),
    ]


assert ctypes.sizeof(LoopInfo64) == 232
assert ctypes.sizeof(LoopConfig) == 304


def ioctl(fd: int, name: str, arg: int | bytes | bytearray | ctypes.Structure = 0) -> int:
    """Issue ioctl ``name`` (a key of IOCTLS). Errors become ``OSError(errno, 'NAME: strerror')``
    and EINTR is retried (:mod:`rig.drivers.ffi.calls`). A structure or bytearray argument is
    filled in place."""
    request = IOCTLS[name]
    if isinstance(arg, ctypes.Structure | bytearray):
        result = checked(name, fcntl.ioctl, fd, request, arg, True)
    else:
        result = checked(name, fcntl.ioctl, fd, request, arg)
    return result if isinstance(result, int) else 0


def ioctl_read(fd: int, name: str, fmt: str) -> int:
    """An ioctl that fills one integer of struct format ``fmt`` (``'i'``, ``'I'``, ``'Q'``...)."""
    buf = bytearray(struct.calcsize(fmt))
    ioctl(fd, name, buf)
    value: int = struct.unpack(fmt, buf)[0]
    return value


def ioctl_range(fd: int, name: str, offset: int, length: int) -> None:
    """BLKDISCARD / BLKZEROOUT: ``uint64_t range[2] = {offset, length}``."""
    ioctl(fd, name, bytearray(struct.pack("QQ", offset, length)))
