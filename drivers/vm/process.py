"""Starting QEMU so that it never outlives us: its own process group (killed as a whole on
timeout or close) and ``PR_SET_PDEATHSIG`` = SIGKILL, so the kernel kills it if the process that
started it dies, even by SIGKILL.

Caveat (prctl(2)): the death signal follows the *thread* that forked, so start guests from a
thread that lives as long as they do (the main thread, in pytest).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from rig.drivers.ffi import libc


def spawn(argv: Sequence[str], log: Path, stdin: int = subprocess.DEVNULL,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` (in ``cwd``) in a new process group with a SIGKILL death signal; stdout
    and stderr go to ``log``; ``stdin`` is /dev/null unless given (``subprocess.PIPE``)."""
    parent = os.getpid()

    def child_setup() -> None:  # runs in the child between fork and exec
        libc.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    with open(log, "wb") as out:
        return subprocess.Popen(
            list(argv), stdin=stdin, stdout=out, cwd=cwd, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=child_setup,
        )


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole process group of ``proc`` and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


