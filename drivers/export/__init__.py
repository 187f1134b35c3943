"""Exports: any graph served as a real ``/dev/loopN`` (``docs/export.md``).

:mod:`.device` mounts a one-file FUSE file system over the graph and binds a loop device to it,
and cleans up after itself even after a SIGKILL; :mod:`.fuse_ops` answers libfuse's requests
(the per-request hot path). What the package exports is :mod:`.device`'s public API, so
``from rig.drivers.export import export`` is the way in.
"""

from rig.drivers.export.device import (
    DEFAULT_THREADS,
    LIBFUSE3_MAX_WRITE,
    MAX_THREADS,
    MOUNT_TIMEOUT,
    PREFIX,
    Export,
    export,
    fuse_available,
    fuse_mounts,
    sweep_stale,
)

__all__ = [
    "DEFAULT_THREADS", "LIBFUSE3_MAX_WRITE", "MAX_THREADS", "MOUNT_TIMEOUT", "PREFIX", "Export",
    "export", "fuse_available", "fuse_mounts", "sweep_stale",
]
