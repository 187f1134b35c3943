"""Host drivers (installed as ``rig.drivers``). Importing this package registers them.

The core finds them through :mod:`rig.core.registry`; nothing in ``rig/`` imports a driver by name.
The command line (``rig.cli``) sits above this package and imports what it needs directly.
"""

from rig.drivers.nodes import file, host_cdrom, host_device, removable_loop_node
from rig.drivers.sg import node as sg_node

__all__ = ["file", "host_cdrom", "host_device", "removable_loop_node", "sg_node"]
