"""Export a graph and run a program on it: what ``rig run`` and ``rig crash record`` share.

The graph is served as ``/dev/loopN`` (:func:`rig.drivers.export.export`), the program runs
with ``RIG_DEV`` set to it and carries ``RIG_OWNER`` (:func:`rig.drivers.procs.owner_env`), so
that the export's reaper kills it and whatever it started if this process is killed. It stays
in our process group, so the terminal's Ctrl-C and job control reach it as before.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from rig.core.backend import BlockBackend

#: What a command adds to the program's environment while it runs, given the open graph (the
#: mark socket of ``rig crash record``); it may set up something for the run and tear it down.
ExtraEnv = Callable[[BlockBackend], AbstractContextManager[Mapping[str, str]]]


#: What runs around the program, given the open graph and the device (``rig run --qmp``).
Control = Callable[[BlockBackend, str], AbstractContextManager[None]]


@contextlib.contextmanager
def _no_control(blk: BlockBackend, device: str) -> Iterator[None]:
    yield


@contextlib.contextmanager
def _nothing(blk: BlockBackend) -> Iterator[Mapping[str, str]]:
    yield {}


def export_and_run(spec: Any, cmd: Sequence[str], who: str, *,
                   extra_env: ExtraEnv = _nothing, open_options: Mapping[str, Any] | None = None,
                   control: Control | None = None) -> int:
    """Open the graph ``spec`` (with ``open_options`` for :func:`rig.open`: the error policy),
    export it, run ``cmd`` on the device (with ``extra_env``'s entries added, and under
    ``control``, given the backend and the device: QMP) and tear everything down; ``cmd``'s
    exit status, or 127 (said on stderr, prefixed ``who``) when it cannot be started."""
    import rig
    from rig.drivers.export import export

    with rig.open(spec, **(open_options or {})) as blk, export(blk) as ex, \
            (control or _no_control)(blk, ex.path), extra_env(blk) as env:
        return _run_on_device(cmd, ex.path, who, env)


def _run_on_device(cmd: Sequence[str], device: str, who: str,
                  env: Mapping[str, str] | None = None) -> int:
    """Run ``cmd`` with ``RIG_DEV=device``, the owner marker and ``env`` added; its exit
    status, or 127 (said on stderr, prefixed ``who``) when it cannot be started."""
    from rig.drivers.procs import owner_env

    try:
        return subprocess.run(list(cmd), env={**os.environ, **(env or {}), **owner_env(),
                                              "RIG_DEV": device}).returncode
    except OSError as e:
        print(f"{who}: {cmd[0]}: {e.strerror}", file=sys.stderr)
        return 127
