"""QMP control of a running guest, through the ``qemu.qmp`` library's synchronous wrapper
(``qemu.qmp.legacy.QEMUMonitorProtocol``; PyPI ``qemu.qmp``, the ``vm`` extra).

Only the handful of commands the lab needs are wrapped; :meth:`Monitor.command` sends any other.
Events (``DEVICE_TRAY_MOVED``, ``DEVICE_DELETED``) are kept until :meth:`Monitor.events` or
:meth:`Monitor.wait_event` takes them.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from rig.errors import RigError


class Monitor:
    """A connected QMP session on a guest's unix socket."""

    def __init__(self, socket_path: Path, timeout: float = 30.0) -> None:
        try:
            from qemu.qmp import QMPError
            from qemu.qmp.legacy import QEMUMonitorProtocol
        except ImportError:
            raise RigError("the qemu.qmp library is missing: pip install 'blockrig[vm]' "
                           "(or pip install qemu.qmp)") from None
        self._error: type[Exception] = QMPError
        self._qmp = QEMUMonitorProtocol(str(socket_path))
        self._pending: list[dict[str, Any]] = []
        try:
            self._qmp.connect(negotiate=True)
        except (OSError, QMPError) as e:
            raise RigError(f"cannot connect to QMP at {socket_path}: {e}") from None
        self._qmp.settimeout(timeout)

    def command(self, name: str, **arguments: Any) -> Any:
        """Run a QMP command; its ``return`` value, or a RigError with QEMU's message."""
        try:
            return self._qmp.cmd(name, **arguments)
        except self._error as e:
            raise RigError(f"QMP {name} failed: {e}") from None

    def events(self) -> list[dict[str, Any]]:
        """Every event received so far (and not yet taken)."""
        self._pending += self._qmp.get_events(wait=False)
        self._qmp.clear_events()
        taken, self._pending = self._pending, []
        return taken

    def wait_event(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        """The first event called ``name`` (earlier other events stay pending)."""
        deadline = time.monotonic() + timeout
        while True:
            self._pending += self._qmp.get_events(wait=False)
            self._qmp.clear_events()
            for i, event in enumerate(self._pending):
                if event.get("event") == name:
                    return self._pending.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise RigError(f"no QMP {name} event within {timeout:g} s")
            try:
                got = self._qmp.pull_event(wait=min(left, 0.5))
            except TimeoutError:
                continue
            if got is not None:
                self._pending.append(got)

    def close(self) -> None:
        with contextlib.suppress(OSError, self._error):
            self._qmp.close()
