"""Coordination between processes of the rig: is a pid alive, a blocking file lock, the marker
that every program a rig command runs carries, and :class:`DeathWatch`, which cleans up after
this process if it dies without doing so itself (SIGKILL).

Why a marker and not ``PR_SET_PDEATHSIG`` for the programs the rig runs (``rig run``'s CMD,
``rig crash record``'s, ``rig crash check``'s checker): the death signal reaches only the direct
child (``sh -c 'a & b'`` leaves ``a`` running), it follows the *thread* that forked rather than
the process, the kernel clears it when the child executes a set-user-ID program, and setting it
needs Python code between fork and exec (``preexec_fn``), which is unsafe in a process whose
libfuse worker threads call into Python. So each program gets ``RIG_OWNER=<pid>.<start time>``
of the rig process in its environment, which its descendants inherit, and a :class:`DeathWatch`
(the export's reaper) SIGKILLs every process that carries it once the rig process is dead.
A program that clears its environment (``env -i``, ``sudo``) escapes the marker.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

#: The environment variable that marks a program as run by a rig process (see the module doc).
OWNER_ENV = "RIG_OWNER"

#: ``sh`` that SIGKILLs every process whose environment holds ``RIG_OWNER=$OWNER``, again until
#: none is left (a process may fork while it is being killed); zombies have no environment.
KILL_OWNED = (
    'k=0; while [ -n "$OWNER" ] && [ $k -lt 40 ]; do '
    f'p=$(grep -lzxF "{OWNER_ENV}=$OWNER" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3); '
    '[ -z "$p" ] && break; kill -9 $p 2>/dev/null; sleep 0.05; k=$((k + 1)); done')


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists (also when it belongs to someone else)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def locked(path: str | Path, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block; the block
    gets True. With ``wait`` false, a lock held elsewhere is not waited for: the block gets
    False and holds nothing."""
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def owner_token(pid: int | None = None) -> str:
    """``<pid>.<start time>`` of process ``pid`` (this one by default): unique even when the
    pid is used again later."""
    pid = os.getpid() if pid is None else pid
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return f"{pid}.{stat[stat.rindex(')') + 2:].split()[19]}"


def owner_env() -> dict[str, str]:
    """What to add to the environment of a program this process runs, so that it dies with
    this process (killed by the :class:`DeathWatch` of this process's exports)."""
    return {OWNER_ENV: owner_token()}


#: The watcher's loop: ``done`` ends it; ``NAME value`` lines (:meth:`DeathWatch.tell`) set
#: ``$W_NAME`` for the script; EOF (the process died) falls through to the script.
_WATCH = ('while read -r k v; do case $k in done) exit 0;; [A-Z_]*) export "W_$k=$v";; esac; '
          'done; ')


class DeathWatch:
    """A ``sh`` in a session of its own that runs ``script`` (with ``args`` as ``$1``...) if
    this process dies without calling :meth:`release`.

    It waits on its stdin, a socket whose other end only this process holds (close-on-exec):
    :meth:`release` writes a line and closes it, and the watcher exits; at EOF without that
    line (we died, even by SIGKILL) it runs the script with ``$OWNER`` set to this process's
    :func:`owner_token`. Its own environment lacks ``RIG_OWNER``, so no other watcher's
    :data:`KILL_OWNED` kills it. A socket and not a pipe: the line is sent with MSG_NOSIGNAL,
    so a watcher that is gone (killed by someone) never costs us a SIGPIPE.
    """

    def __init__(self, name: str, script: str, *args: str) -> None:
        ours, theirs = socket.socketpair()
        self._sock: socket.socket | None = ours
        env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
        env["OWNER"] = owner_token()
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                ["sh", "-c", _WATCH + script, name, *args],
                stdin=theirs.fileno(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=env, start_new_session=True)
        except OSError:  # no sh: nothing cleans up after a SIGKILL
            self._proc = None
        finally:
            theirs.close()

    def tell(self, name: str, value: str) -> None:
        """Give the script one more fact learnt after the watcher started: it sees ``$W_NAME``
        (``name``: capital letters and underscores; ``value``: one line)."""
        if not re.fullmatch(r"[A-Z_]+", name) or "\n" in value:
            raise ValueError(f"DeathWatch.tell: bad name or value {name!r}={value!r}")
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.send(f"{name} {value}\n".encode(), socket.MSG_NOSIGNAL)

    def release(self) -> None:
        """We cleaned up ourselves: the watcher exits without running its script."""
        if self._sock is None:
            return
        with contextlib.suppress(OSError):
            self._sock.send(b"done\n", socket.MSG_NOSIGNAL)
        self._sock.close()
        self._sock = None
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
