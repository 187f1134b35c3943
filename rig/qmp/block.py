"""The exported device as QMP sees it: QEMU's block and run-state commands over one
:class:`~rig.core.backend.BlockBackend`, and its error policy as events.

Commands (QEMU's names and reply shapes): ``query-block`` (with ``io-status``),
``query-blockstats``, ``query-status``, ``stop``, ``cont``, ``block_set_io_throttle``, and
``quit`` when the command line gives a way to end. Events: ``BLOCK_IO_ERROR`` for every failed
request (with the ``action`` the policy took and ``nospace``), ``STOP`` when the backend stops
(the first request the ``stop`` policy parks, or ``stop``), ``RESUME`` when it runs again.

The device is named ``device`` (default ``disk``, the FUSE file's name); ``qdev`` is the block
device it is exported as (``/dev/loopN``); either names it in ``block_set_io_throttle``. Nodes
without a ``node-name`` are shown as ``#blockN`` (N: their place in the graph, depth first), as
QEMU shows its generated names.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from typing import Any

from rig.core.backend import BlockBackend, IoStatus, PolicyEvent
from rig.core.node import Node
from rig.filters.throttle import ThrottleFilter
from rig.qmp.dispatcher import Dispatcher
from rig.qmp.protocol import DEVICE_NOT_FOUND, QmpError, event
from rig.qmp.schema import Param
from rig.throttle.group import ThrottleGroup
from rig.throttle.limits import BUCKET_NAMES, ThrottleLimits

#: block_set_io_throttle's argument stems -> the throttle bucket names.
THROTTLE_ARGS = {"bps": "bps-total", "bps_rd": "bps-read", "bps_wr": "bps-write",
                 "iops": "iops-total", "iops_rd": "iops-read", "iops_wr": "iops-write"}
assert set(THROTTLE_ARGS.values()) == set(BUCKET_NAMES)
Emit = Callable[[dict[str, Any]], None]


def node_names(root: Node) -> dict[int, str]:
    """``id(node) -> name`` for every node under ``root``: its ``node-name`` or ``#blockN``."""
    return {id(n): n.node_name or f"#block{i}" for i, n in enumerate(root.walk())}


def blockstats_entry(backend: BlockBackend, device: str, qdev: str) -> dict[str, Any]:
    """One device's entry of ``query-blockstats``: QEMU's ``BlockStats`` shape."""
    root = backend.root
    return {"device": device, "qdev": qdev, "node-name": node_names(root)[id(root)],
            "stats": backend.stats.as_qemu()}


def find_throttle(root: Node) -> ThrottleFilter | None:
    for node in root.walk():
        if isinstance(node, ThrottleFilter):
            return node
    return None


class BlockDevice:
    """QMP's view of ``backend``; :meth:`register` adds its commands, and events go to
    ``emit`` (the server's broadcast)."""

    def __init__(self, backend: BlockBackend, emit: Emit, *, device: str = "disk",
                 qdev: str = "", quit: Callable[[], None] | None = None) -> None:
        self.backend = backend
        self.device = device
        self.qdev = qdev
        self._emit = emit
        self._quit = quit
        self._throttle_lock = threading.Lock()  # clients run commands at once
        backend.listeners.append(self._policy_event)

    def detach(self) -> None:
        """Stop turning the backend's policy events into QMP events."""
        if self._policy_event in self.backend.listeners:
            self.backend.listeners.remove(self._policy_event)

    # ------------------------------------------------------------------ events
    def root_name(self) -> str:
        root = self.backend.root
        return node_names(root)[id(root)]

    def _policy_event(self, ev: PolicyEvent) -> None:
        if ev.kind == "io-error":
            self._emit(event("BLOCK_IO_ERROR", {
                "device": self.device, "node-name": self.root_name(),
                "operation": "read" if ev.op == "read" else "write",
                "action": ev.action,
                "nospace": ev.errno == errno.ENOSPC,
                "reason": os.strerror(ev.errno)}))
        elif ev.kind == "stop":
            self._emit(event("STOP"))
        elif ev.kind == "resume":
            self._emit(event("RESUME"))

    # ---------------------------------------------------------------- commands
    def register(self, d: Dispatcher) -> None:
        d.add("query-block", self.query_block)
        d.add("query-blockstats", self.query_blockstats, Param("query-nodes", "boolean"))
        d.add("query-status", self.query_status)
        d.add("stop", self.stop)
        d.add("cont", self.cont)
        throttle = [Param("device", "string"), Param("id", "string"), Param("group", "string"),
                    Param("iops_size", "integer")]
        for stem in THROTTLE_ARGS:
            throttle += [Param(stem, "integer", required=True), Param(f"{stem}_max", "integer"),
                         Param(f"{stem}_max_length", "integer")]
        d.add("block_set_io_throttle", self.block_set_io_throttle, *throttle)
        if self._quit is not None:
            d.add("quit", self.quit)

    def _check_device(self, device: str | None, qdev_id: str | None) -> None:
        given = [v for v in (device, qdev_id) if v is not None]
        if len(given) != 1:
            raise QmpError("Need exactly one of 'device' and 'id'")
        if given[0] not in (self.device, self.qdev) or not given[0]:
            raise QmpError(f"Device '{given[0]}' not found", DEVICE_NOT_FOUND)

    def _throttle_values(self) -> dict[str, int]:
        node = find_throttle(self.backend.root)
        limits = node.group.limits if node is not None else ThrottleLimits()
        out: dict[str, int] = {}
        for stem, bucket in THROTTLE_ARGS.items():
            out[stem] = limits.avg[bucket]
        for stem, bucket in THROTTLE_ARGS.items():
            out[f"{stem}_max"] = limits.max[bucket]
            out[f"{stem}_max_length"] = limits.max_length[bucket]
        out["iops_size"] = limits.iops_size
        return out

    def query_block(self) -> list[dict[str, Any]]:
        blk = self.backend
        root = blk.root
        info: dict[str, Any] = {
            "device": self.device, "qdev": self.qdev, "type": "unknown",
            "removable": False, "locked": False, "io-status": blk.iostatus.value,
        }
        if blk.is_inserted():
            inserted: dict[str, Any] = {
                "file": root.describe(), "node-name": self.root_name(), "ro": blk.read_only,
                "drv": root.driver_name, "backing_file_depth": 0, "encrypted": False,
                "detect_zeroes": "off", "write_threshold": 0,
                "cache": {"writeback": blk.write_cache, "direct": root.cache_direct,
                          "no-flush": root.no_flush},
                "image": {"filename": root.describe(), "format": root.format_name
                          or root.driver_name, "virtual-size": blk.getlength()},
            }
            inserted.update(self._throttle_values())
            node = find_throttle(root)
            if node is not None:
                inserted["group"] = node.group.name
            info["inserted"] = inserted
        return [info]

    def query_blockstats(self, query_nodes: bool = False) -> list[dict[str, Any]]:
        if query_nodes:
            raise QmpError("query-nodes: the rig counts requests per device, not per node")
        return [blockstats_entry(self.backend, self.device, self.qdev)]

    def query_status(self) -> dict[str, Any]:
        blk = self.backend
        if not blk.paused:
            status = "running"
        elif blk.iostatus is not IoStatus.OK:
            status = "io-error"
        else:
            status = "paused"
        return {"status": status, "singlestep": False, "running": not blk.paused}

    def stop(self) -> dict[str, Any]:
        self.backend.pause()
        return {}

    def cont(self) -> dict[str, Any]:
        self.backend.resume()
        return {}

    def quit(self) -> dict[str, Any]:
        assert self._quit is not None
        self._quit()
        return {}

    def block_set_io_throttle(self, device: str | None = None, id: str | None = None,
                              group: str | None = None, **values: int) -> dict[str, Any]:
        self._check_device(device, id)
        mapping: dict[str, int] = {}
        for key, value in values.items():
            if key == "iops_size":
                mapping["iops-size"] = value
                continue
            for stem, bucket in THROTTLE_ARGS.items():
                if key == stem:
                    mapping[bucket] = value
                elif key == f"{stem}_max":
                    mapping[f"{bucket}-max"] = value
                elif key == f"{stem}_max_length":
                    mapping[f"{bucket}-max-length"] = value
        limits = ThrottleLimits.from_mapping({k: v for k, v in mapping.items() if v
                                              or k.endswith("-max-length")})
        with self._throttle_lock:
            node = find_throttle(self.backend.root)
            if node is None:
                if not limits.enabled:
                    return {}
                node = self._insert_throttle(group or self.device, limits)
            with node.group.cond:
                node.group.set_limits(limits, node.group.now())
        return {}

    def _insert_throttle(self, name: str, limits: ThrottleLimits) -> ThrottleFilter:
        """A throttle filter on top of the graph, as QEMU throttles a BlockBackend that had
        no limits: requests that start from now on pass it."""
        blk = self.backend
        node = ThrottleFilter(group=ThrottleGroup(name, limits), node_name="")
        node.attach_child(node.child_role, blk.root)
        blk.root = node
        return node
