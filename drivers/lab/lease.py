"""Leases: a lock file per lab device, so two test processes (two pytest runs, two xdist
workers) never use the same disk at once.

A lease is ``flock(LOCK_EX)`` on ``<lease dir>/<key>.lock``. flock locks belong to the open file
description, so two opens in one process exclude each other too, and the kernel drops the lock
when the holder dies, even by SIGKILL: a lease never goes stale. The holder writes who it is
(pid, host, owner, time) into the file, which is what a refused process reports.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
import socket
import tempfile
import time
from types import TracebackType

from rig.errors import ConfigError, StateError

#: Where leases live when the inventory does not say (root: /run/rig/leases).
SYSTEM_LEASE_DIR = "/run/rig/leases"


class LeaseBusyError(StateError):
    """Another process holds the lease."""

    def __init__(self, message: str, holder: dict[str, object]) -> None:
        super().__init__(message)
        self.holder = holder


def default_lease_dir() -> str:
    """/run/rig/leases where it can exist (root), else a per-user directory in the temp dir.
    Nothing is created until a lease is taken."""
    parent = SYSTEM_LEASE_DIR
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if os.access(parent, os.W_OK):
        return SYSTEM_LEASE_DIR
    return os.path.join(tempfile.gettempdir(), f"rig-leases-{os.getuid()}")


def lease_file(lease_dir: str, key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.:-]", "_", key)
    return os.path.join(lease_dir, f"{safe}.lock")


def read_holder(path: str) -> dict[str, object]:
    """What the current (or last) holder wrote into the lock file ({} if nothing readable)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe_holder(holder: dict[str, object]) -> str:
    if not holder:
        return "another process"
    owner = f" ({holder['owner']})" if holder.get("owner") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{owner} since {holder.get('since')}"


class Lease:
    """A held lease; release it with :meth:`release` or by leaving the ``with`` block."""

    def __init__(self, key: str, path: str, fd: int) -> None:
        self.key = key
        self.path = path
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd >= 0

    @classmethod
    def acquire(cls, lease_dir: str, key: str, *, owner: str = "",
                timeout: float = 0.0) -> Lease:
        """Take the lease on ``key``, waiting up to ``timeout`` seconds for its holder.

        Raises LeaseBusyError naming the holder, ConfigError if the directory is unusable.
        """
        try:
            os.makedirs(lease_dir, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"lease directory {lease_dir}: {e.strerror}") from None
        path = lease_file(lease_dir, key)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    holder = read_holder(path)
                    raise LeaseBusyError(f"{key} is leased by {describe_holder(holder)} "
                                         f"(lock file {path})", holder) from None
                time.sleep(0.05)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "owner": owner,
                "since": datetime.datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        return cls(key, path, fd)

    def release(self) -> None:
        """Give the lease back (idempotent)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()

    def __repr__(self) -> str:
        return f"<Lease {self.key} {'held' if self.held else 'released'} {self.path}>"
