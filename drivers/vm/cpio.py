"""A writer for the cpio "newc" format, the one the Linux kernel unpacks as an initramfs.

Each entry is a 110-byte ASCII header (magic ``070701`` and 13 eight-digit hex fields), the
NUL-terminated name, padding to 4 bytes, the data, and padding to 4 bytes again. The archive ends
with an entry named ``TRAILER!!!``. (Format: ``Documentation/driver-api/early-userspace/
buffer-format.rst`` in the kernel tree.)
"""

from __future__ import annotations

import stat
from typing import BinaryIO

_MAGIC = b"070701"


class CpioWriter:
    """Append directories, files and symlinks to a newc archive; :meth:`close` ends it."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 1
        self._closed = False

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode, b"", nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, b"", rdev=(major, minor))

    def close(self) -> None:
        if not self._closed:
            self._entry("TRAILER!!!", 0, b"", ino=0, nlink=1)
            self._closed = True

    def _entry(self, name: str, mode: int, data: bytes, *, ino: int | None = None,
               nlink: int = 1, rdev: tuple[int, int] = (0, 0)) -> None:
        if ino is None:
            ino = self._ino
            self._ino += 1
        raw_name = name.lstrip("/").encode() + b"\0"
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, *rdev, len(raw_name), 0)
        header = _MAGIC + b"".join(b"%08X" % f for f in fields)
        self._out.write(header + raw_name + _pad(len(header) + len(raw_name)))
        self._out.write(data + _pad(len(data)))


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)
