"""What the commands that run a program on a device share (``rig run``, ``rig crash record``):
a sparse scratch image of a size given on the command line, and running the program with
``RIG_DEV`` set to the device."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence

from rig.core.units import SizeError, parse_size
from rig.errors import RigError


@contextlib.contextmanager
def scratch_image(size_text: str, prefix: str) -> Iterator[str]:
    """A new sparse file of ``--size`` ``size_text`` (a positive multiple of 512 bytes),
    removed afterwards; a bad size is a RigError naming ``--size``."""
    try:
        size = parse_size(size_text)
    except SizeError as e:
        raise RigError(f"--size: {e}") from None
    if size <= 0 or size % 512:
        raise RigError(f"--size: {size_text} is not a positive multiple of 512 bytes")
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".img")
    try:
        os.ftruncate(fd, size)
        os.close(fd)
        yield path
    finally:
        os.unlink(path)


def run_on_device(cmd: Sequence[str], device: str, who: str,
                  env: Mapping[str, str] | None = None) -> int:
    """Run ``cmd`` with ``RIG_DEV=device`` (and ``env`` added); its exit status, or 127 (said
    on stderr, prefixed ``who``) when it cannot be started."""
    try:
        return subprocess.run(list(cmd), env={**os.environ, **(env or {}),
                                              "RIG_DEV": device}).returncode
    except OSError as e:
        print(f"{who}: {cmd[0]}: {e.strerror}", file=sys.stderr)
        return 127
