"""What the commands that run a program on a device share (``rig run``, ``rig crash record``):
a sparse scratch image of a size given on the command line, which has no name, so that nothing
of it outlives the process; and running the program with ``RIG_DEV`` set to the device and the
marker that lets the export's reaper kill it if the command is killed."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence

from rig.core.registry import service
from rig.core.units import SizeError, parse_size
from rig.errors import RigError


def unlinked_file(directory: str, prefix: str) -> int:
    """An fd on a new empty file in ``directory`` that has no name: ``O_TMPFILE``, or where the
    filesystem lacks it a named file unlinked at once. The kernel frees it when the last fd on
    it closes, so even a SIGKILL leaves nothing; ``/proc/self/fd/N`` opens it again."""
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".img", dir=directory)
    os.unlink(path)
    return fd


@contextlib.contextmanager
def scratch_image(size_text: str, prefix: str) -> Iterator[str]:
    """A new sparse file of ``--size`` ``size_text`` (a positive multiple of 512 bytes) with no
    name in the temp dir (:func:`unlinked_file`; ``prefix`` names it only where the filesystem
    lacks ``O_TMPFILE``, for an instant): yields the ``/proc/self/fd/N`` path that opens it,
    valid in this process until the block ends. A bad size is a RigError naming ``--size``."""
    try:
        size = parse_size(size_text)
    except SizeError as e:
        raise RigError(f"--size: {e}") from None
    if size <= 0 or size % 512:
        raise RigError(f"--size: {size_text} is not a positive multiple of 512 bytes")
    fd = unlinked_file(tempfile.gettempdir(), prefix)
    try:
        os.ftruncate(fd, size)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def run_on_device(cmd: Sequence[str], device: str, who: str,
                  env: Mapping[str, str] | None = None) -> int:
    """Run ``cmd`` with ``RIG_DEV=device`` (and ``env`` added); its exit status, or 127 (said
    on stderr, prefixed ``who``) when it cannot be started.

    ``cmd`` and whatever it starts carry ``RIG_OWNER`` (the ``owner_env`` service), so that
    the reaper of the export under ``device`` kills them if this process is killed. ``cmd``
    stays in our process group, so the terminal's Ctrl-C and job control reach it as before.
    """
    owner = service("owner_env")()
    try:
        return subprocess.run(list(cmd), env={**os.environ, **(env or {}), **owner,
                                              "RIG_DEV": device}).returncode
    except OSError as e:
        print(f"{who}: {cmd[0]}: {e.strerror}", file=sys.stderr)
        return 127
