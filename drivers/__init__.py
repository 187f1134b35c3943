"""Host drivers (installed as ``rig.drivers``). Importing this package registers them.

The core finds them through :mod:`rig.core.registry`; nothing in ``rig/`` imports a driver by name.
"""

from rig.drivers import (
    devices_cmd,
    export,
    export_cmd,
    file,
    host_cdrom,
    host_device,
    loop,
    removable_loop_node,
    run_cmd,
    sg_cmd,
)
from rig.drivers.sg import node as sg_node
from rig.drivers.vm import cmd as vm_cmd

loop.register()
devices_cmd.register()
export.register()
export_cmd.register()
run_cmd.register()
sg_cmd.register()
vm_cmd.register()

__all__ = [
    "devices_cmd", "export", "export_cmd", "file", "host_cdrom", "host_device", "loop",
    "removable_loop_node", "run_cmd", "sg_cmd", "sg_node", "vm_cmd",
]
