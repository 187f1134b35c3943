"""A scratch image for the commands that run a program on a fresh device (``rig run --size``,
``rig crash record``): a sparse file of a size given on the command line, with no name, so that
nothing of it outlives the process."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

from rig.core.tmpfile import unlinked_file
from rig.core.units import SizeError, parse_size
from rig.errors import ConfigError


@contextlib.contextmanager
def scratch_image(size_text: str, prefix: str) -> Iterator[str]:
    """A new sparse file of ``--size`` ``size_text`` (a positive multiple of 512 bytes) with no
    name in the temp dir (:func:`~rig.core.tmpfile.unlinked_file`; ``prefix`` names it only
    where the filesystem lacks ``O_TMPFILE``, for an instant): yields the ``/proc/self/fd/N``
    path that opens it, valid in this process until the block ends. A bad size is a ConfigError
    naming ``--size``."""
    try:
        size = parse_size(size_text)
    except SizeError as e:
        raise ConfigError(f"--size: {e}") from None
    if size <= 0 or size % 512:
        raise ConfigError(f"--size: {size_text} is not a positive multiple of 512 bytes")
    fd = unlinked_file(tempfile.gettempdir(), prefix)
    try:
        os.ftruncate(fd, size)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)
