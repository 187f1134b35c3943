"""Name -> driver class, and name -> CLI command, filled by whoever registers.

The core never imports a host driver by name: ``rig.drivers`` registers its drivers and commands
here when imported, and :func:`load_plugins` imports it (plus anything third parties declare under
the ``rig.drivers`` entry-point group).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypeVar

from rig.errors import ConfigError, RegistrationError

if TYPE_CHECKING:
    import argparse

    from rig.core.node import Node

N = TypeVar("N", bound="type[Node]")

_DRIVERS: dict[str, type[Node]] = {}
_SERVICES: dict[str, Callable[..., Any]] = {}
_COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[..., int]]] = {}
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


def register_service(name: str, fn: Callable[..., Any]) -> None:
    """Offer a hardware helper (e.g. ``scratch_loop``) to the core without an import arrow."""
    _SERVICES[name] = fn


def register_command(
    name: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[..., int],
) -> None:
    """Offer a ``rig NAME`` subcommand (for commands that need hardware access)."""
    _COMMANDS[name] = (add_arguments, run)


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


def service(name: str) -> Callable[..., Any]:
    load_plugins()
    try:
        return _SERVICES[name]
    except KeyError:
        raise RegistrationError(f"no driver package offers the {name!r} service") from None


def commands() -> dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[..., int]]]:
    load_plugins()
    return dict(_COMMANDS)
