"""What the ``file`` and ``host_device`` drivers share (QEMU's file-posix): open flags, O_DIRECT
alignment probing, pread/pwrite loops, fdatasync with fsyncgate handling, cache options.
"""

from __future__ import annotations

import errno
import os
import stat

from rig.core.buffers import PAGE_SIZE, aligned_buffer, iov_slice
from rig.core.graph import OpenContext
from rig.core.limits import BlockLimits
from rig.core.node import Iov, Node, ReqFlags
from rig.core.options import Options
from rig.errors import ConfigError, DeviceNotFoundError, RigError

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:
    from typing import Any, ClassVar

AIO_MODES = ("threads", "native", "io_uring")


def open_error(path: str, err: OSError) -> RigError:
    """QEMU's wording: ``Could not open 'X': strerror``."""
    code = err.errno or errno.EIO
    if code == errno.EROFS:  # QEMU turns EROFS on open into EACCES
        code = errno.EACCES
    msg = f"Could not open '{path}': {os.strerror(code)}"
    if code == errno.ENOENT:
        return DeviceNotFoundError(msg)
    return RigError(msg)


def stat_path(path: str) -> os.stat_result:
    """``os.stat`` with QEMU's open error (a device driver's safety check needs the type
    before it opens a block device for writing)."""
    try:
        return os.stat(path)
    except OSError as e:
        raise open_error(path, e) from None


class PosixNode(Node):
    """A host node backed by one file descriptor."""

    #: Filename prefix the driver strips (``file:``, ``host_device:``).
    prefix: ClassVar[str] = ""

    def __init__(self, filename: str, *, aio: str = "threads", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filename = filename
        self.aio = aio
        self.fd = -1
        self.page_cache_inconsistent = 0
        """fsyncgate: once fdatasync failed on a cached fd, every later flush fails with it."""

    @classmethod
    def parse_common(cls, opts: Options, ctx: OpenContext) -> tuple[str, str]:
        filename = opts.str("filename")
        if filename is None:
            raise ConfigError(f"The '{cls.driver_name}' block driver requires a file name")
        if cls.prefix and filename.startswith(cls.prefix):
            filename = filename[len(cls.prefix):]
        # QEMU's image locking (OFD locks on bytes of the file): the rig takes none; the option
        # is read with QEMU's check so that QEMU's command lines open (qemu-iotests 226).
        locking = opts.str("locking", "auto")
        if locking not in ("on", "off", "auto"):
            raise ConfigError(f"invalid parameter value: {locking}")
        aio = opts.enum("aio", AIO_MODES, "threads")
        if aio == "native" and not ctx.cache_direct:
            raise ConfigError("aio=native was specified, but it requires cache.direct=on, "
                              "which was not specified.")
        return filename, aio

    def describe(self) -> str:
        return self.filename

    # ------------------------------------------------------------------ open
    def open_flags(self) -> int:
        """The flags of :meth:`open_fd` (a driver may add its own, e.g. O_NONBLOCK)."""
        flags = os.O_RDONLY if self.read_only else os.O_RDWR
        flags |= os.O_CLOEXEC
        if self.cache_direct:
            flags |= os.O_DIRECT
        return flags

    def open_fd(self) -> None:
        try:
            self.fd = os.open(self.filename, self.open_flags())
        except OSError as e:
            raise open_error(self.filename, e) from None

    def open_checked(self, refusal: str, *, device: bool) -> os.stat_result:
        """QEMU's raw_open_common order: open first (so a directory opened for writing is
        "Could not open 'X': Is a directory"), then the type of what was opened: a regular
        file, or (``device``) a character or block device, else ``ConfigError(refusal)``."""
        self.open_fd()
        st = os.fstat(self.fd)
        mode = st.st_mode
        ok = (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) if device else stat.S_ISREG(mode)
        if not ok:
            self.close()
            raise ConfigError(refusal)
        return st

    def probe_alignment(self, logical_block_size: int | None) -> tuple[int, int]:
        """QEMU's raw_probe_alignment: (request_alignment, buffer_alignment)."""
        if not self.cache_direct:
            return 1, 1
        max_align = max(4096, PAGE_SIZE)
        buf = aligned_buffer(2 * max_align)
        req_align = logical_block_size or 0
        if not req_align:
            for align in (1, 512, 1024, 2048, 4096):
                try:
                    os.preadv(self.fd, [buf[:align]], 0)
                except OSError as e:
                    if e.errno == errno.EINVAL:
                        continue
                req_align = max_align if align == 1 else align
                break
        buf_align = 0
        for align in (1, 512, 1024, 2048, 4096):
            try:
                os.preadv(self.fd, [buf[align:align + max_align]], 0)
            except OSError as e:
                if e.errno == errno.EINVAL:
                    continue
            buf_align = req_align if align == 1 else align
            break
        if not req_align or not buf_align:
            raise RigError(f"Could not find working O_DIRECT alignment for '{self.filename}'. "
                           "Try cache.direct=off")
        return req_align, buf_align

    def base_limits(self, logical_block_size: int | None) -> BlockLimits:
        req_align, buf_align = self.probe_alignment(logical_block_size)
        return BlockLimits(request_alignment=req_align, buffer_alignment=buf_align)

    # ------------------------------------------------------------------ data
    def _preadv(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        done = os.preadv(self.fd, iov, offset)
        if done == length:
            return
        self._finish_short_read(offset, length, iov, done)

    def _finish_short_read(self, offset: int, length: int, iov: Iov, done: int) -> None:
        while done < length:
            rest = iov_slice(iov, done, length - done)
            n = os.preadv(self.fd, rest, offset + done)
            if n == 0:  # end of file: the rest reads as zeroes, as in QEMU
                for buf in rest:
                    buf[:] = bytes(buf.nbytes)
                return
            done += n

    def _pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        done = os.pwritev(self.fd, iov, offset)
        if done == length:
            return
        self._finish_short_write(offset, length, iov, done)

    def _finish_short_write(self, offset: int, length: int, iov: Iov, done: int) -> None:
        while done < length:
            n = os.pwritev(self.fd, iov_slice(iov, done, length - done), offset + done)
            if n == 0:
                raise OSError(errno.EIO, f"short write at offset {offset + done}")
            done += n

    def direct(self, write: bool, offset: int, length: int) -> tuple[Node, int, int] | None:
        """Plain reads and writes of the descriptor (a subclass that adds to them, e.g. a
        device with media, sends its requests down the graph)."""
        cls = type(self)
        if (self.fd < 0 or (write and self.read_only) or cls._preadv is not PosixNode._preadv
                or cls._pwritev is not PosixNode._pwritev or self.handles_events):
            return None
        if write:
            self.write_gen += 1  # a leaf counts its write (Node._finish_write)
        return self, self.fd, offset

    def finish_direct(self, write: bool, offset: int, length: int, iov: Iov,
                      done: int) -> None:
        if write:
            self._finish_short_write(offset, length, iov, done)
        else:
            self._finish_short_read(offset, length, iov, done)

    def _flush_to_disk(self) -> None:
        if self.page_cache_inconsistent:
            raise OSError(self.page_cache_inconsistent,
                          f"fdatasync: {os.strerror(self.page_cache_inconsistent)} "
                          "(an earlier flush failed; the page cache may have lost data)")
        try:
            os.fdatasync(self.fd)
        except OSError as e:
            if not self.cache_direct:
                self.page_cache_inconsistent = e.errno or errno.EIO
            raise

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
