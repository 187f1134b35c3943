"""A file with no name: scratch space that nothing outlives, not even a SIGKILL."""

from __future__ import annotations

import errno
import os
import tempfile


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
