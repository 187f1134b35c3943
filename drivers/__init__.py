"""Host drivers (installed as ``rig.drivers``).

The core finds them through :mod:`rig.core.registry`; nothing in ``rig/`` imports a driver by name.
:data:`DRIVERS` tells the registry which module registers which driver; it imports a module
when its driver is first looked up, so importing this package imports no driver (issue 19).
The command line (``rig.cli``) sits above this package and imports what it needs directly.
"""

#: Driver name -> the module that registers it (``@register_driver``).
DRIVERS = {
    "file": "rig.drivers.nodes.file",
    "host_device": "rig.drivers.nodes.host_device",
    "host_cdrom": "rig.drivers.nodes.host_cdrom",
    "removable_loop": "rig.drivers.nodes.removable_loop_node",
    "sg": "rig.drivers.sg.node",
}

__all__ = ["DRIVERS"]
