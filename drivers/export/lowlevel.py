"""A FUSE session on libfuse3's low-level API, through ctypes: the export's serving loop.

:class:`Session` fills a ``struct fuse_lowlevel_ops`` with ctypes callbacks to the methods of
a handler (:class:`~rig.drivers.export.fuse_ops.ExportOperations`) named like the slots in
:data:`~rig.drivers.ffi.libfuse.CALLBACKS`, makes the session (``fuse_session_new`` with the
mount options), mounts it (``fuse_session_mount``: through ``fusermount3``, which stays as the
``auto_unmount`` watcher) and runs libfuse's single-threaded loop (``fuse_session_loop``: the
export's reader, which hands requests on itself, ``fuse_ops``). The loop ends when the mount
goes away (``fusermount3 -u``); :meth:`close` then unmounts (a no-op on a connection that is
gone) and frees the session.

Unlike ``fuse_main`` (what mfusepy ran before), this installs no signal handlers and never
``chdir("/")``s the process.
"""

from __future__ import annotations

import ctypes
from typing import Any

from rig.drivers.ffi.calls import bind
from rig.drivers.ffi.libfuse import CALLBACKS, LIBFUSE_LOWLEVEL, FuseArgs, FuseLowlevelOps
from rig.errors import RigError


class Session:
    """One low-level FUSE session serving ``handler`` on ``mountpoint``."""

    def __init__(self, lib: ctypes.CDLL, handler: Any, mountpoint: str, options: str) -> None:
        self._fuse = bind(lib, LIBFUSE_LOWLEVEL)
        self.mountpoint = mountpoint
        # The callbacks must outlive the session: libfuse keeps only their addresses.
        self._callbacks = {name: ctypes.CFUNCTYPE(None, *argtypes)(getattr(handler, name))
                           for name, argtypes in CALLBACKS.items()}
        self._ops = FuseLowlevelOps()
        for name, callback in self._callbacks.items():
            setattr(self._ops, name, ctypes.cast(callback, ctypes.c_void_p))
        argv = [b"blockrig", b"-o", options.encode()]
        self._argv = (ctypes.c_char_p * (len(argv) + 1))(*argv, None)
        self._args = FuseArgs(len(argv), self._argv, 0)
        se = self._fuse["fuse_session_new"](ctypes.byref(self._args), ctypes.byref(self._ops),
                                            ctypes.sizeof(self._ops), None)
        if not se:
            raise RigError(f"libfuse3 refused the session options {options!r}")
        self._se: int | None = se

    def mount(self) -> None:
        assert self._se is not None
        if self._fuse["fuse_session_mount"](self._se, self.mountpoint.encode()) != 0:
            raise RigError(f"libfuse3 could not mount {self.mountpoint} (see its message on "
                           "stderr)")

    def fd(self) -> int:
        """The session's ``/dev/fuse`` descriptor (once mounted)."""
        assert self._se is not None
        return int(self._fuse["fuse_session_fd"](self._se))

    def loop(self) -> int:
        """Serve until the mount goes away; libfuse's result (0, or ``-errno``)."""
        assert self._se is not None
        return int(self._fuse["fuse_session_loop"](self._se))

    def close(self) -> None:
        """Unmount (nothing to do when the mount is gone already) and free the session."""
        se, self._se = self._se, None
        if se:
            self._fuse["fuse_session_unmount"](se)
            self._fuse["fuse_session_destroy"](se)
