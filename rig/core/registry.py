"""Name -> driver class, filled by whoever registers.

The core never imports a host driver by name: ``rig.drivers`` registers its drivers here when
imported, and :func:`load_plugins` imports it (plus anything third parties declare under the
``rig.drivers`` entry-point group). The command line (``rig.cli``) sits above the drivers and
imports what it needs from them directly, so nothing else is looked up here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, TypeVar

from rig.errors import ConfigError, RegistrationError

if TYPE_CHECKING:
    from rig.core.node import Node

N = TypeVar("N", bound="type[Node]")

_DRIVERS: dict[str, type[Node]] = {}
_loaded = False

#: Core nodes (no hardware access) registered alongside the host drivers.
CORE_DRIVER_MODULES = ("rig.formats.raw", "rig.nodes.memory", "rig.filters.blkdebug",
                       "rig.filters.faults", "rig.filters.throttle", "rig.filters.writecache",
                       "rig.filters.recorder", "rig.filters.overlay",
                       "rig.formats.qcow2.driver", "rig.filters.copy_on_read")


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


def load_plugins() -> None:
    """Import ``rig.drivers`` and the ``rig.drivers`` entry points once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in CORE_DRIVER_MODULES:
        importlib.import_module(module)
    importlib.import_module("rig.drivers")
    for ep in entry_points(group="rig.drivers"):
        ep.load()


def driver_class(name: str) -> type[Node]:
    load_plugins()
    try:
        return _DRIVERS[name]
    except KeyError:
        known = ", ".join(sorted(_DRIVERS))
        raise ConfigError(f"Unknown driver '{name}' (known drivers: {known})") from None


def drivers() -> dict[str, type[Node]]:
    load_plugins()
    return dict(_DRIVERS)
