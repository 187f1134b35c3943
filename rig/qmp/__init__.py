"""QMP, QEMU's machine protocol, served over a unix socket for a running export
(``rig export --qmp SOCKET``, ``rig run --qmp SOCKET``); docs/qmp.md.

:func:`serve` puts the pieces together: :mod:`~rig.qmp.server` (socket, clients, events),
:mod:`~rig.qmp.dispatcher` (commands, negotiation), :mod:`~rig.qmp.block` (QEMU's block and
run-state commands, the error-policy events) and :mod:`~rig.qmp.rig_commands` (``x-rig-*``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rig.core.backend import BlockBackend
from rig.qmp.block import BlockDevice
from rig.qmp.dispatcher import Dispatcher
from rig.qmp.rig_commands import RigCommands
from rig.qmp.server import QmpServer


@contextlib.contextmanager
def serve(path: str, backend: BlockBackend, *, qdev: str = "",
          quit: Callable[[], None] | None = None) -> Iterator[QmpServer]:
    """Serve QMP for ``backend`` on the unix socket ``path`` until the block ends (the socket
    file is removed then). ``qdev`` is the block device it is exported as; ``quit``, if given,
    is what the ``quit`` command calls."""
    dispatcher = Dispatcher()
    server = QmpServer(path, dispatcher)
    device = BlockDevice(backend, server.broadcast, qdev=qdev, quit=quit)
    rig = RigCommands(backend, server.broadcast)
    device.register(dispatcher)
    rig.register(dispatcher)
    server.start()
    try:
        yield server
    finally:
        device.detach()
        rig.close()
        server.close()


__all__ = ["serve"]
