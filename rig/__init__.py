"""blockrig: a hardware-in-the-loop test and fault-injection rig for block storage.

Quick use::

    import rig
    with rig.open({"driver": "raw", "file": {"driver": "file", "filename": "disk.img"}}) as blk:
        blk.pwrite(0, b"x" * 4096)
        assert blk.pread(0, 4096) == b"x" * 4096
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from rig.errors import (
    ConfigError,
    DeviceNotFoundError,
    RigError,
    StateError,
    UnsafeDeviceError,
)

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:
    from typing import Any

    from rig.core.backend import BlockBackend, ErrorAction, IoStatus
    from rig.core.cache import CacheMode, parse_cache_mode
    from rig.core.graph import GraphSpec, open_node
    from rig.core.limits import BlockLimits
    from rig.core.node import BlockStatus, Node, ReqFlags

__version__ = "0.1.0"

#: The names ``rig`` gives from the core, imported on first use: ``import rig`` (which every
#: ``rig.x`` import runs first) stays cheap, so a command imports only what it uses (issue 19).
_LAZY = {
    "BlockBackend": "rig.core.backend", "ErrorAction": "rig.core.backend",
    "IoStatus": "rig.core.backend", "CacheMode": "rig.core.cache",
    "parse_cache_mode": "rig.core.cache", "GraphSpec": "rig.core.graph",
    "open_node": "rig.core.graph", "BlockLimits": "rig.core.limits",
    "BlockStatus": "rig.core.node", "Node": "rig.core.node", "ReqFlags": "rig.core.node",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rig' has no attribute {name!r}")
    __import__(module)  # not importlib.import_module: importlib costs start-up (issue 19)
    value = getattr(sys.modules[module], name)
    globals()[name] = value
    return value


def open(
    spec: GraphSpec,
    *,
    cache: str = "writeback",
    read_only: bool = False,
    on_read_error: str = "report",
    on_write_error: str = "report",
) -> BlockBackend:
    """Open a node graph (dict, ``json:{...}``, ``key=value,...`` or a filename) as a backend.

    ``cache`` is one of QEMU's modes (none, writeback, writethrough, directsync, unsafe); options
    in the spec (``cache.direct``, ``cache.no-flush``) take precedence for their node.
    """
    from rig.core.backend import BlockBackend
    from rig.core.cache import parse_cache_mode
    from rig.core.graph import open_node

    mode = parse_cache_mode(cache)
    defaults: Mapping[str, Any] = {
        "cache.direct": mode.direct,
        "cache.no-flush": mode.no_flush,
        "read-only": read_only,
    }
    root = open_node(spec, defaults=defaults)
    return BlockBackend(root, write_cache=mode.writeback, read_only=read_only or None,
                        on_read_error=on_read_error, on_write_error=on_write_error)


__all__ = [
    "BlockBackend", "BlockLimits", "BlockStatus", "CacheMode", "ConfigError",
    "DeviceNotFoundError", "ErrorAction", "IoStatus", "Node", "ReqFlags", "RigError",
    "StateError", "UnsafeDeviceError", "open", "open_node", "parse_cache_mode",
]
