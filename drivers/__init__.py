"""Host drivers (installed as ``rig.drivers``). Importing this package registers them.

The core finds them through :mod:`rig.core.registry`; nothing in ``rig/`` imports a driver by name.
"""

from rig.drivers import devices_cmd, file, host_device, loop

loop.register()
devices_cmd.register()

__all__ = ["devices_cmd", "file", "host_device", "loop"]
