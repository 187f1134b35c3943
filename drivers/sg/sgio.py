"""The sg v3 interface (scsi/sg.h): ``sg_io_hdr`` declared as data, and SG_IO that returns
everything the kernel says (SCSI status, host and driver status, residual, duration, info,
sense bytes) without collapsing any of it.

Works on a SCSI generic node (``/dev/sgN``) and on a block device that takes SG_IO
(``/dev/sdX``, ``/dev/srN``). The ioctl numbers are in :data:`rig.drivers.ffi.ioctls.IOCTLS` with
every other, so an ioctl's errno becomes OSError in that module's one function.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from rig.core.buffers import aligned_buffer
from rig.drivers.ffi.ioctls import ioctl, ioctl_read
from rig.scsi.cdb import Command, Direction
from rig.scsi.sense import decode_sense
from rig.scsi.status import Outcome

SG_DXFER_NONE: Final = -1
SG_DXFER_TO_DEV: Final = -2
SG_DXFER_FROM_DEV: Final = -3
SG_FLAG_DIRECT_IO: Final = 1
SG_FLAG_Q_AT_HEAD: Final = 0x20
SG_INFO_CHECK: Final = 0x1
SG_MAX_SENSE: Final = 252
DEFAULT_TIMEOUT_MS: Final = 60_000

_DIRECTIONS = {Direction.NONE: SG_DXFER_NONE, Direction.IN: SG_DXFER_FROM_DEV,
               Direction.OUT: SG_DXFER_TO_DEV}


class SgIoHdr(ctypes.Structure):
    """struct sg_io_hdr (88 bytes on 64-bit Linux)."""

    _fields_ = [
        ("interface_id", ctypes.c_int),
        ("dxfer_direction", ctypes.c_int),
        ("cmd_len", ctypes.c_ubyte),
        ("mx_sb_len", ctypes.c_ubyte),
        ("iovec_count", ctypes.c_ushort),
        ("dxfer_len", ctypes.c_uint),
        ("dxferp", ctypes.c_void_p),
        ("cmdp", ctypes.c_void_p),
        ("sbp", ctypes.c_void_p),
        ("timeout", ctypes.c_uint),
        ("flags", ctypes.c_uint),
        ("pack_id", ctypes.c_int),
        ("usr_ptr", ctypes.c_void_p),
        ("status", ctypes.c_ubyte),
        ("masked_status", ctypes.c_ubyte),
        ("msg_status", ctypes.c_ubyte),
        ("sb_len_wr", ctypes.c_ubyte),
        ("host_status", ctypes.c_ushort),
        ("driver_status", ctypes.c_ushort),
        ("resid", ctypes.c_int),
        ("duration", ctypes.c_uint),
        ("info", ctypes.c_uint),
    ]


assert ctypes.sizeof(SgIoHdr) == (88 if ctypes.sizeof(ctypes.c_void_p) == 8 else 64)


@dataclass(frozen=True)
class SgResult:
    """What SG_IO returned: the outcome (status, host, driver, resid, duration, sense) and the
    data that came in (``dxfer_len - resid`` bytes)."""

    command: Command
    outcome: Outcome
    data: bytes
    sense_bytes: bytes
    msg_status: int = 0
    masked_status: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome.ok

    def check(self) -> SgResult:
        """Self, or an OSError with the kernel's errno for the outcome."""
        if not self.ok:
            raise self.outcome.error(self.command.name.upper().replace("_", " "))
        return self


#: What carries a filled ``sg_io_hdr`` to the device and back: the ioctl, or a layer over it
#: (the SCSI fault rules, :mod:`rig.drivers.sg.faults`) that answers some commands itself.
Transport = Callable[[int, str, "SgIoHdr"], int]


def sg_io(fd: int, command: Command, *, timeout_ms: int = DEFAULT_TIMEOUT_MS,
          flags: int = 0, max_sense: int = SG_MAX_SENSE,
          transport: Transport | None = None) -> SgResult:
    """Send ``command`` on ``fd``. An ioctl failure (EINVAL, EPERM, ENODEV...) raises OSError;
    a command that failed on the device returns normally, with everything in the result.
    ``transport`` replaces the ioctl (the header is decoded the same way afterwards)."""
    cdb = ctypes.create_string_buffer(command.cdb, len(command.cdb))
    sense = ctypes.create_string_buffer(max_sense)
    length = (len(command.data_out) if command.direction is Direction.OUT
              else command.data_in if command.direction is Direction.IN else 0)
    # Page-aligned: the kernel maps the user pages of a block device's SG_IO straight into the
    # request, and a buffer that straddles one more page than the queue's max_segments is
    # EINVAL (the sg node sizes its largest transfer to whole pages; seen on virtio-scsi).
    area = aligned_buffer(max(length, 1))
    buf = (ctypes.c_char * max(length, 1)).from_buffer(area)
    if command.direction is Direction.OUT:
        area[:length] = command.data_out
    hdr = SgIoHdr(
        interface_id=ord("S"), dxfer_direction=_DIRECTIONS[command.direction],
        cmd_len=len(command.cdb), mx_sb_len=max_sense, iovec_count=0, dxfer_len=length,
        dxferp=ctypes.cast(buf, ctypes.c_void_p) if length else None,
        cmdp=ctypes.cast(cdb, ctypes.c_void_p), sbp=ctypes.cast(sense, ctypes.c_void_p),
        timeout=timeout_ms, flags=flags,
    )
    (transport if transport is not None else ioctl)(fd, "SG_IO", hdr)
    sense_bytes = sense.raw[:hdr.sb_len_wr]
    moved = max(0, length - hdr.resid)
    data = area[:moved].tobytes() if command.direction is Direction.IN else b""
    outcome = Outcome(status=hdr.status, host_status=hdr.host_status,
                      driver_status=hdr.driver_status, resid=hdr.resid,
                      duration_ms=hdr.duration, sense=decode_sense(sense_bytes),
                      info=hdr.info)
    return SgResult(command, outcome, data, sense_bytes, hdr.msg_status, hdr.masked_status)


class SgDevice:
    """An open SCSI device (``/dev/sgN`` or a block device) for SG_IO.

    Opened with O_NONBLOCK (an empty CD drive still answers), read-write only when asked:
    the caller does the safety check before asking for ``write=True``."""

    def __init__(self, path: str, *, write: bool = False,
                 timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
        self.path = path
        self.timeout_ms = timeout_ms
        self.writable = write
        self.transport: Transport | None = None
        """None: the SG_IO ioctl; else what :func:`sg_io` sends through."""
        flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_NONBLOCK | os.O_CLOEXEC
        self.fd = os.open(path, flags)
        try:
            st = os.fstat(self.fd)
            self.is_generic = stat.S_ISCHR(st.st_mode)
            if not (self.is_generic or stat.S_ISBLK(st.st_mode)):
                raise OSError(errno.ENOTTY, f"{path} is not a SCSI device")
            self.version = self.version_num()
        except BaseException:
            os.close(self.fd)
            raise

    def version_num(self) -> int:
        """SG_GET_VERSION_NUM (30536 = 3.5.36); block devices answer it too."""
        return ioctl_read(self.fd, "SG_GET_VERSION_NUM", "i")

    def execute(self, command: Command, *, timeout_ms: int | None = None,
                flags: int = 0) -> SgResult:
        return sg_io(self.fd, command, timeout_ms=timeout_ms or self.timeout_ms, flags=flags,
                     transport=self.transport)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> SgDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
