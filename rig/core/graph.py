"""Build a node graph from QEMU-shaped options, and a BlockBackend on top of it."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from rig.core.node import Node
from rig.core.options import (
    INHERITED,
    Options,
    flatten,
    parse_json_filename,
    parse_keyval,
)
from rig.core.registry import driver_class, drivers
from rig.core.values import shown
from rig.errors import ConfigError

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:
    from typing import Any

#: Format drivers (error wording differs from protocol drivers, as in QEMU).
FORMAT_DRIVERS = frozenset({"raw", "qcow2"})

GraphSpec = Mapping[str, "Any"] | str  # "Any": typing is not imported at run time


class OpenContext:
    """What a driver's ``from_options`` gets besides its own keys."""

    def __init__(self, opts: Options, node_name: str, read_only: bool, no_flush: bool,
                 cache_direct: bool, discard_unmap: bool) -> None:
        self.opts = opts
        self.node_name = node_name
        self.read_only = read_only
        self.no_flush = no_flush
        self.cache_direct = cache_direct
        self.discard_unmap = discard_unmap

    def __repr__(self) -> str:
        return f"OpenContext(opts={self.opts!r}, {self.node_kwargs()!r})"

    def node_kwargs(self) -> dict[str, Any]:
        return {
            "node_name": self.node_name,
            "read_only": self.read_only,
            "no_flush": self.no_flush,
            "cache_direct": self.cache_direct,
            "discard_unmap": self.discard_unmap,
        }

    def inherited(self) -> dict[str, Any]:
        values = {
            "read-only": self.read_only,
            "cache.direct": self.cache_direct,
            "cache.no-flush": self.no_flush,
            "discard": "unmap" if self.discard_unmap else "ignore",
        }
        assert set(values) == set(INHERITED)
        return values

    def open_child(self, role: str, *, required: bool = True) -> Node:
        child = self.opts.child(role, self.inherited())
        if child is None:
            if required:
                raise ConfigError(f"Parameter '{self.opts.path}{role}' is missing (the node "
                                  f"needs a '{role}' child)")
            raise LookupError(role)
        return open_options(child)


def spec_to_flat(spec: GraphSpec) -> dict[str, Any]:
    """A dict, ``json:{...}``, ``key=value,...`` text or a plain filename -> flat options."""
    if isinstance(spec, Mapping):
        return flatten(spec)
    if spec.startswith("json:"):
        return flatten(parse_json_filename(spec))
    if "=" in spec.split(",")[0]:
        return dict(parse_keyval(spec))
    return {"filename": spec}


def probe_protocol(filename: str) -> str:
    """``file`` for regular files, ``host_device`` for block and character devices."""
    for prefix in ("file:", "host_device:", "host_cdrom:", "blkdebug:"):
        if filename.startswith(prefix):
            return prefix[:-1]
    try:
        st = os.stat(filename)
    except OSError:
        return "file"
    if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return "host_device"
    return "file"


def open_options(opts: Options) -> Node:
    """Open the node described by ``opts`` (and, through it, its children)."""
    driver = opts.str("driver")
    if driver is None:
        filename = opts.str("filename")
        if filename is None:
            raise ConfigError(f"Parameter '{opts.path}driver' is missing")
        driver = probe_protocol(filename)
    if not driver.isprintable() and driver not in drivers():
        raise ConfigError(f"Parameter '{opts.path}driver' does not accept value "
                          f"{shown(driver)} (not a driver name)")
    cls = driver_class(driver)
    discard = opts.enum("discard", ("ignore", "off", "unmap", "on"), "unmap")
    ctx = OpenContext(
        opts=opts,
        node_name=opts.str("node-name", "") or "",
        read_only=opts.bool("read-only"),
        no_flush=opts.bool("cache.no-flush"),
        cache_direct=opts.bool("cache.direct"),
        discard_unmap=discard in ("unmap", "on"),
    )
    opts.bool("force-share")
    opts.bool("auto-read-only")
    node = cls.from_options(opts, ctx)
    try:
        opts.check_all_used("format" if driver in FORMAT_DRIVERS else "protocol", driver)
    except ConfigError:
        node.close()
        raise
    node.refresh()
    return node


def open_node(spec: GraphSpec, *, defaults: Mapping[str, Any] | None = None) -> Node:
    """Open a graph. ``defaults`` fill options the spec leaves out (e.g. ``cache.direct``).

    A blkdebug rule that no node of the graph can trigger is a warning on stderr
    (:mod:`rig.filters.blkdebug_reach`)."""
    flat = spec_to_flat(spec)
    root = open_options(Options(flat, inherited=defaults))
    if any(node.driver_name == "blkdebug" for node in root.walk()):
        from rig.filters.blkdebug_reach import report_unreachable_rules

        report_unreachable_rules(root)
    return root
