"""What a qcow2 node does when it finds corruption while serving a request.

Two kinds (see :mod:`errors`):

* a :class:`CorruptionEvent` is what QEMU signals (qcow2_signal_corruption): on a writable node
  it is *fatal*: one line on stderr ("qcow2: Marking image as corrupt: ...; further corruption
  events will be suppressed"), the corrupt bit set in the header on disk, the request failing
  with EIO and every later request with ENOMEDIUM, as QEMU's node without a driver; nothing
  else is written, not even the metadata still cached. On a read-only node it is not fatal: one
  line ("qcow2: Image is corrupt: ...; further non-fatal corruption events will be suppressed")
  and EIO;
* any other :class:`CorruptImageError` (checks QEMU does not make) fails the request with EIO
  and refuses later writes of this node; the image is left as it is.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable

from rig.formats.qcow2.errors import CorruptImageError, CorruptionEvent


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Corruption:
    def __init__(self) -> None:
        self.found = ""
        """The first corruption (not signalled) found; later writes are refused."""
        self.signaled = False
        self.dead = False
        """A fatal event happened: every request fails (QEMU's bs->drv = NULL)."""
        self.say: Callable[[str], None] = _stderr
        """Where the one-line report goes (stderr, as QEMU prints it)."""

    def check_usable(self) -> None:
        if self.dead:
            raise OSError(errno.ENOMEDIUM, os.strerror(errno.ENOMEDIUM))

    def check_writable(self) -> None:
        self.check_usable()
        if self.found:
            raise OSError(errno.EIO, f"{self.found} (writes refused)")

    def fail(self, e: CorruptImageError, *, writable: bool,
             mark: Callable[[], None]) -> OSError:
        """The OSError for the request that found ``e``; ``mark`` sets the corrupt bit."""
        if not isinstance(e, CorruptionEvent):
            self.found = self.found or str(e)
            return OSError(errno.EIO, str(e))
        if not self.signaled or writable:
            if writable:
                self.say(f"qcow2: Marking image as corrupt: {e.what}; further corruption events "
                         "will be suppressed")
                self.dead = True
                mark()
            else:
                self.say(f"qcow2: Image is corrupt: {e.what}; further non-fatal corruption "
                         "events will be suppressed")
            self.signaled = True
        return OSError(errno.EIO, str(e))
