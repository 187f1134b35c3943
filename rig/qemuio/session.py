"""A qemu-io session: the open backend, pending aio requests, where output goes."""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from rig.core.backend import BlockBackend
from rig.errors import RigError

if TYPE_CHECKING:
    from concurrent.futures import Future


@dataclass(frozen=True)
class OpenOptions:
    """qemu-io's open flags (command line or the ``open`` command)."""

    fmt: str | None = None
    cache: str = "writethrough"
    read_only: bool = False
    discard: str = "unmap"
    aio: str = "threads"
    image_opts: bool = False
    force_share: bool = False
    extra: tuple[str, ...] = ()
    """``-o key=value,...`` strings."""


Opener = Callable[[str | None, OpenOptions], BlockBackend]


@dataclass
class Session:
    opener: Opener
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    blk: BlockBackend | None = None
    defaults: OpenOptions = field(default_factory=OpenOptions)
    misalign: bool = False
    pending: list[tuple[Future[None], Callable[[Future[None]], int]]] = field(
        default_factory=list)
    #: The program name in messages (qemu-io's ``error_report`` prefix).
    prog: str = "rig io"
    #: How ``sleep`` waits (tests give a recorder instead of waiting).
    sleep: Callable[[float], None] = field(default_factory=lambda: _sleep)

    def open(self, path: str | None, options: OpenOptions | None = None) -> int:
        if self.blk is not None:
            self.err.write("file open already, try 'help close'\n")
            return -errno.EBUSY
        opts = options or self.defaults
        try:
            self.blk = self.opener(path, opts)
            # Only a graph with a blkdebug node has imported its module (start-up: issue 19).
            blkdebug = sys.modules.get("rig.filters.blkdebug")
            debug = blkdebug.find_debug_node(self.blk.root) if blkdebug else None
            if debug is not None:
                debug.say = self._say
        except (RigError, OSError) as e:
            where = f"device {path}" if path and not opts.image_opts else ""
            msg = str(e) if isinstance(e, RigError) else os.strerror(e.errno or errno.EIO)
            msg = " ".join(msg.split("\n")).strip()
            self.err.write(f"{self.prog}: can't open{' ' + where if where else ''}: {msg}\n")
            return -errno.EINVAL
        return 0

    def _say(self, line: str) -> None:
        self.out.write(line + "\n")

    def reap(self, wait: bool = False) -> int:
        """Print completions of aio requests that finished (all of them when ``wait``).

        Waiting for all is qemu-io's ``blk_drain_all``: the graph drains (throttle limits are
        lifted while it does)."""
        ret = 0
        if wait and self.pending and self.blk is not None:
            self.blk.drain()
        still: list[tuple[Future[None], Callable[[Future[None]], int]]] = []
        for fut, done in self.pending:
            if wait or fut.done():
                fut.exception()  # waits
                r = done(fut)
                ret = ret or r
            else:
                still.append((fut, done))
        self.pending = still
        return ret

    def close(self) -> None:
        self.reap(wait=True)
        if self.blk is not None:
            self.blk.close()
            self.blk = None


def _sleep(seconds: float) -> None:
    """time.sleep in pieces: any length of time (qemu-io's ``sleep`` takes up to LONG_MAX ms),
    never an OverflowError, and a Ctrl-C is seen within a second."""
    end = time.monotonic() + seconds
    while seconds > 0:
        time.sleep(min(seconds, 1.0))
        seconds = end - time.monotonic()
