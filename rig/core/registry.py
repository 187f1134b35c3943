"""Name -> driver class, filled by whoever registers.

The core never imports a host driver by name: each driver module registers its class here
(``@register_driver``) when it is imported, and the registry imports a module only when one of
its drivers is looked up (issue 19: ``rig io`` on a raw file imports ``raw`` and ``file``, not
qcow2, SCSI or the filters). Which module registers which name: :data:`CORE_DRIVERS` for the
core nodes, ``rig.drivers.DRIVERS`` for the host drivers (a table of names; importing the
``rig.drivers`` package imports no driver), and anything third parties declare under the
``rig.drivers`` entry-point group, loaded when a name is in neither table or when every driver
is asked for (:func:`drivers`, :func:`load_plugins`). The command line (``rig.cli``) sits above
the drivers and imports what it needs from them directly, so nothing else is looked up here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping

from rig.errors import ConfigError, RegistrationError

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:
    from types import ModuleType
    from typing import TypeVar

    from rig.core.node import Node

    N = TypeVar("N", bound="type[Node]")

_DRIVERS: dict[str, type[Node]] = {}
_loaded = False

#: Core nodes (no hardware access): driver name -> the module that registers it.
CORE_DRIVERS: Mapping[str, str] = {
    "raw": "rig.formats.raw",
    "qcow2": "rig.formats.qcow2.driver",
    "memory": "rig.nodes.memory",
    "null-co": "rig.nodes.null",
    "blkdebug": "rig.filters.blkdebug",
    "faults": "rig.filters.faults",
    "throttle": "rig.filters.throttle",
    "writecache": "rig.filters.writecache",
    "recorder": "rig.filters.recorder",
    "overlay": "rig.filters.overlay",
    "copy-on-read": "rig.filters.copy_on_read",
    "compress": "rig.filters.compress",
}
#: The package whose ``DRIVERS`` table names the host drivers' modules.
HOST_PACKAGE = "rig.drivers"
#: The entry-point group of third-party drivers.
ENTRY_POINT_GROUP = "rig.drivers"


def import_module(name: str) -> ModuleType:
    """The module ``name`` (absolute), imported if it is not yet: ``importlib.import_module``
    without importing importlib (and warnings), which costs every rig start ~0.7 ms (issue 19)."""
    module = sys.modules.get(name)
    if module is None:
        __import__(name)
        module = sys.modules[name]
    return module


def register_driver(name: str) -> Callable[[N], N]:
    """Class decorator: make a Node subclass available to the graph builder as ``name``."""

    def deco(cls: N) -> N:
        old = _DRIVERS.get(name)
        # The same class re-imported (pytester, importlib reloads) may register again.
        if old is not None and old is not cls and (
            (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__)
        ):
            raise RegistrationError(f"driver {name!r} is already registered by {old}")
        cls.driver_name = name
        _DRIVERS[name] = cls
        return cls

    return deco


def driver_modules() -> dict[str, str]:
    """Every driver name the core and the host know -> the module that registers it."""
    host: Mapping[str, str] = getattr(import_module(HOST_PACKAGE), "DRIVERS", {})
    return {**CORE_DRIVERS, **host}


def load_plugins() -> None:
    """Import every driver module of both tables and the ``rig.drivers`` entry points, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in driver_modules().values():
        import_module(module)
    from importlib.metadata import entry_points  # costs ~15 ms: only when every driver is due

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()


def driver_class(name: str) -> type[Node]:
    """The class registered as ``name``: importing only its module when a table names it."""
    cls = _DRIVERS.get(name)
    if cls is None:
        module = driver_modules().get(name)
        if module is not None:
            import_module(module)
            cls = _DRIVERS.get(name)
    if cls is None:
        load_plugins()
        cls = _DRIVERS.get(name)
    if cls is None:
        known = ", ".join(sorted(_DRIVERS))
        raise ConfigError(f"Unknown driver '{name}' (known drivers: {known})")
    return cls


def drivers() -> dict[str, type[Node]]:
    """Every driver (all modules imported, plugins loaded)."""
    load_plugins()
    return dict(_DRIVERS)
