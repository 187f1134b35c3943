"""A loop device standing in as a drive with removable media, so media-change handling can be
tested on any Linux host, without a CD-ROM.

The device stays bound from start to :meth:`LoopDrive.close` (a
:class:`~rig.drivers.loop.LoopDevice`: autoclear, in the rig's registry, gone when the process
dies), because an unbound loop device would be handed to the next ``losetup -f``. What changes is
its backing file and the window onto it:

* **No medium**: bound to an empty, unlinked placeholder file, with ``lo_offset`` past any end,
  so the capacity is 0 (the kernel's ``get_size`` gives 0 when the offset is beyond the file).
* **A medium**: bound to the image, read-only, window open (offset 0).
* **Swap**: ``LOOP_CHANGE_FD``. The kernel allows it only on a read-only device and only between
  files of the same loop size, so a same-size medium is swapped in one step, and any other
  change goes through the closed window (both sizes 0): close the window, change the file, open
  the window again. Every change moves the disk sequence number (``BLKGETDISKSEQ``) and sends
  ``change`` uevents (the last with ``DISK_MEDIA_CHANGE=1``), which is how any process can see it.

Media are read-only: LOOP_CHANGE_FD refuses writable loop devices (EINVAL).
"""

from __future__ import annotations

import os
import stat
import tempfile
import threading
from types import TracebackType

from rig.drivers.ffi.ioctls import LoopInfo64, ioctl, ioctl_read
from rig.drivers.loop import LoopDevice, settle_after_change
from rig.errors import ConfigError

#: lo_offset for "no medium": beyond any file, so every backing file has loop size 0.
CLOSED_WINDOW = 1 << 62


class LoopDrive:
    """A read-only loop device whose medium (an image file) can be inserted, swapped and
    removed while programs keep it open."""

    def __init__(self, medium: str | None = None, *, block_size: int = 512) -> None:
        self.block_size = block_size
        self.medium: str | None = None
        self.tray_open = False
        self._lock = threading.Lock()
        fd, placeholder = tempfile.mkstemp(prefix="blockrig-no-medium-", suffix=".img")
        try:
            self._loop = LoopDevice.attach(placeholder, block_size=block_size, read_only=True)
        except BaseException:
            os.close(fd)
            os.unlink(placeholder)
            raise
        os.unlink(placeholder)
        self._placeholder = fd
        try:
            self._set_window(CLOSED_WINDOW)
            if medium is not None:
                self.insert(medium)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ facts
    @property
    def path(self) -> str:
        """The drive's device node, ``/dev/loopN``."""
        return self._loop.path

    @property
    def device_number(self) -> tuple[int, int]:
        return self._loop.device_number

    def size(self) -> int:
        """Capacity in bytes: 0 without a medium."""
        return ioctl_read(self._loop.fileno(), "BLKGETSIZE64", "Q")

    def diskseq(self) -> int:
        """The kernel's disk sequence number: it moves on every change of medium."""
        return ioctl_read(self._loop.fileno(), "BLKGETDISKSEQ", "Q")

    # ------------------------------------------------------------------ media
    def insert(self, image: str) -> None:
        """Put ``image`` in (replacing any medium) and close the tray."""
        image = os.path.realpath(image)
        fd = self._open_medium(image)
        try:
            with self._lock:
                new_size = os.fstat(fd).st_size
                if self.medium is not None and new_size == self.size():
                    ioctl(self._loop.fileno(), "LOOP_CHANGE_FD", fd)  # same size: one step
                else:
                    self._set_window(CLOSED_WINDOW)
                    ioctl(self._loop.fileno(), "LOOP_CHANGE_FD", fd)
                    self._set_window(0)
                self.medium = image
                self.tray_open = False
        finally:
            os.close(fd)
        settle_after_change(self.path)

    def remove(self, *, open_tray: bool = True) -> None:
        """Take the medium out (the file is released) and leave the tray open."""
        with self._lock:
            if self.medium is not None:
                self._set_window(CLOSED_WINDOW)
                ioctl(self._loop.fileno(), "LOOP_CHANGE_FD", self._placeholder)
                self.medium = None
            self.tray_open = open_tray

    def close_tray(self) -> None:
        self.tray_open = False

    def _open_medium(self, image: str) -> int:
        try:
            fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise ConfigError(f"medium '{image}': {e.strerror}") from None
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "is not a regular file"
        elif st.st_size == 0 or st.st_size % self.block_size:
            problem = f"size {st.st_size} is not a positive multiple of {self.block_size}"
        if problem is not None:
            os.close(fd)
            raise ConfigError(f"medium '{image}' {problem}")
        return fd

    def _set_window(self, offset: int) -> None:
        info = LoopInfo64()
        ioctl(self._loop.fileno(), "LOOP_GET_STATUS64", info)
        info.lo_offset = offset
        info.lo_sizelimit = 0
        ioctl(self._loop.fileno(), "LOOP_SET_STATUS64", info)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Detach the loop device and release the placeholder. Idempotent."""
        try:
            self._loop.detach()
        finally:
            if self._placeholder >= 0:
                os.close(self._placeholder)
                self._placeholder = -1
            self.medium = None

    def __enter__(self) -> LoopDrive:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LoopDrive {self._loop.path} medium={self.medium!r} tray_open={self.tray_open}>"

