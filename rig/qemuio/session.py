"""A qemu-io session: the open backend, pending aio requests, where output goes."""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Callable

from rig.core.backend import BlockBackend
from rig.errors import RigError

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:
    from concurrent.futures import Future
    from typing import Any, TextIO


class OpenOptions:
    """qemu-io's open flags (command line or the ``open`` command). Immutable and compared by
    value, as the frozen dataclass it was (written out: dataclasses cost start-up)."""

    fmt: str | None
    cache: str
    read_only: bool
    discard: str
    aio: str
    image_opts: bool
    force_share: bool
    extra: tuple[str, ...]
    """``-o key=value,...`` strings."""
    copy_on_read: bool
    """``-C``: a copy-on-read filter on top (QEMU's BDRV_O_COPY_ON_READ)."""
    snapshot: bool
    """``-s``: writes go to a throw-away overlay, never to the image (BDRV_O_SNAPSHOT)."""

    def __init__(self, fmt: str | None = None, cache: str = "writethrough",
                 read_only: bool = False, discard: str = "unmap", aio: str = "threads",
                 image_opts: bool = False, force_share: bool = False,
                 extra: tuple[str, ...] = (), copy_on_read: bool = False,
                 snapshot: bool = False) -> None:
        self.__dict__.update(fmt=fmt, cache=cache, read_only=read_only, discard=discard,
                             aio=aio, image_opts=image_opts, force_share=force_share,
                             extra=extra, copy_on_read=copy_on_read, snapshot=snapshot)

    def replace(self, **changes: Any) -> OpenOptions:
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return OpenOptions(**{**self.__dict__, **changes})

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} (OpenOptions is immutable)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} (OpenOptions is immutable)")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(tuple(self.__dict__.values()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"OpenOptions({inner})"


Opener = Callable[[str | None, OpenOptions], BlockBackend]


class Session:
    """What a qemu-io session holds (a plain class: dataclasses cost ``rig io`` start-up)."""

    def __init__(self, opener: Opener, out: TextIO | None = None, err: TextIO | None = None,
                 blk: BlockBackend | None = None, defaults: OpenOptions | None = None,
                 misalign: bool = False,
                 pending: list[tuple[Future[None], Callable[[Future[None]], int]]] | None = None,
                 prog: str = "rig io", sleep: Callable[[float], None] | None = None) -> None:
        self.opener = opener
        self.out: TextIO = sys.stdout if out is None else out
        self.err: TextIO = sys.stderr if err is None else err
        self.blk = blk
        self.defaults = OpenOptions() if defaults is None else defaults
        self.misalign = misalign
        self.pending: list[tuple[Future[None], Callable[[Future[None]], int]]] = (
            [] if pending is None else pending)
        #: The program name in messages (qemu-io's ``error_report`` prefix).
        self.prog = prog
        #: How ``sleep`` waits (tests give a recorder instead of waiting).
        self.sleep: Callable[[float], None] = _sleep if sleep is None else sleep
        #: ``--verbose-errors``: an unknown driver's message is followed by the known ones.
        self.verbose_errors = False
        #: What the open image was opened from (``reopen`` opens it again with changes).
        self.opened: tuple[str | None, OpenOptions] | None = None

    def open(self, path: str | None, options: OpenOptions | None = None) -> int:
        if self.blk is not None:
            self.err.write(f"{self.prog}: file open already, try 'help close'\n")
            return -errno.EBUSY
        opts = options or self.defaults
        try:
            self.blk = self.opener(path, opts)
            self.opened = (path, opts)
            # Only a graph with a blkdebug node has imported its module (start-up: issue 19).
            blkdebug = sys.modules.get("rig.filters.blkdebug")
            debug = blkdebug.find_debug_node(self.blk.root) if blkdebug else None
            if debug is not None:
                debug.say = self._say
        except (RigError, OSError) as e:
            where = f"device {path}" if path and not opts.image_opts else ""
            msg = str(e) if isinstance(e, RigError) else os.strerror(e.errno or errno.EIO)
            msg = " ".join(msg.split("\n")).strip()
            msg, sep, known = msg.partition(" (known drivers: ")
            self.err.write(f"{self.prog}: can't open{' ' + where if where else ''}: {msg}\n")
            if sep and self.verbose_errors:  # QEMU's one line, then the rig's help
                self.err.write(f"{self.prog}: known drivers: {known.rstrip(')')}\n")
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


def image_node(root: Any) -> Any:
    """The image under the nodes ``-C`` and ``-s`` put on top (marked ``implicit``): what
    ``info`` and ``reopen`` mean by the image, as QEMU's flags add no node of their own."""
    while getattr(root, "implicit", False):
        root = root.children["file"]
    return root


def _sleep(seconds: float) -> None:
    """time.sleep in pieces: any length of time (qemu-io's ``sleep`` takes up to LONG_MAX ms),
    never an OverflowError, and a Ctrl-C is seen within a second."""
    end = time.monotonic() + seconds
    while seconds > 0:
        time.sleep(min(seconds, 1.0))
        seconds = end - time.monotonic()
