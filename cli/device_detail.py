"""``rig devices DEV [--json]``: one device's (or graph's) per-request limits and write cache.

For a block device: the kernel's queue limits (``/sys/dev/block/M:m/queue``), its volatile write
cache (``queue/write_cache``: ``write back`` means flushes matter), and the limits the rig's
``host_device`` node takes from them as QEMU 7.2's file-posix does (opened read-only with
``cache.direct=on``, as ``qemu-io -t none``). For anything else :func:`rig.open` takes (an
image, ``json:{...}``, ``key=value,...``), the limits of that graph, opened read-only.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
from typing import Any

from rig.cli.devices_cmd import human_size
from rig.core.limits import BlockLimits
from rig.core.options import printable
from rig.core.values import shown
from rig.drivers.nodes.block_queue import QueueLimits, queue_dir, read_queue
from rig.errors import ConfigError

#: BlockLimits field -> its line in the text output.
_LIMIT_NAMES = {
    "request_alignment": "request alignment",
    "buffer_alignment": "buffer alignment",
    "max_transfer": "max transfer",
    "opt_transfer": "optimal transfer",
    "max_hw_transfer": "max hw transfer",
    "max_hw_iov": "max hw segments",
    "discard_granularity": "discard granularity",
    "max_discard": "max discard",
    "max_write_zeroes": "max write zeroes",
    "physical_block_size": "physical block size",
}
#: QueueLimits field -> (sysfs attribute, shown in bytes?).
_QUEUE_NAMES = {
    "logical_block_size": ("logical_block_size", True),
    "physical_block_size": ("physical_block_size", True),
    "minimum_io_size": ("minimum_io_size", True),
    "optimal_io_size": ("optimal_io_size", True),
    "max_sectors": ("max_sectors_kb", True),
    "max_hw_sectors": ("max_hw_sectors_kb", True),
    "max_segments": ("max_segments", False),
    "max_segment_size": ("max_segment_size", True),
    "discard_granularity": ("discard_granularity", True),
    "discard_max_bytes": ("discard_max_bytes", True),
    "discard_max_hw_bytes": ("discard_max_hw_bytes", True),
    "write_zeroes_max_bytes": ("write_zeroes_max_bytes", True),
}
_UNLIMITED = {"max_transfer", "max_discard", "max_write_zeroes"}


def _bytes(n: int) -> str:
    return f"{human_size(n)} ({n})" if n >= 1024 else str(n)


def _limit(name: str, value: int) -> str:
    if value == 0 and name in _UNLIMITED:
        return "0 (no limit)"
    if value == 0:
        return "0 (unknown)" if name.startswith("max_hw") else "0"
    return str(value) if name in ("max_hw_iov", "request_alignment", "buffer_alignment",
                                  "physical_block_size") else _bytes(value)


def _cache_line(queue: QueueLimits) -> str:
    if queue.write_cache == "write back":
        return "write back (volatile: data is durable only after a flush)"
    if queue.write_cache == "write through":
        return "write through (no volatile cache: a completed write is durable)"
    return "unknown (no queue/write_cache)"


def device_report(path: str) -> dict[str, Any]:
    """The JSON object of a block device: queue, write cache, host_device limits."""
    import rig

    st = os.stat(path)
    queue = read_queue(st.st_rdev)
    with rig.open({"driver": "host_device", "filename": path}, read_only=True,
                  cache="none") as blk:
        limits = blk.root.limits
    return {"device": path, "queue_dir": queue_dir(st.st_rdev), "kind": "block device",
            "write_cache": queue.write_cache or None,
            "volatile_write_cache": queue.volatile_write_cache if queue.write_cache else None,
            "fua": queue.fua, "queue": queue.as_dict(), "limits": limits.as_dict()}


def graph_report(spec: str) -> dict[str, Any]:
    """The JSON object of a graph: its limits, and each node's driver and own limits."""
    import rig

    with rig.open(spec, read_only=True) as blk:
        nodes = [{"driver": node.driver_name, "limits": node.limits.as_dict()}
                 for node in blk.root.walk()]
        return {"graph": spec, "kind": "graph", "limits": blk.root.limits.as_dict(),
                "nodes": nodes}


def _text(report: dict[str, Any]) -> str:
    lines: list[str] = []
    if report["kind"] == "block device":
        queue = QueueLimits(**report["queue"])
        lines += [f"{report['device']}", f"  write cache: {_cache_line(queue)}"
                  + ("; FUA supported" if queue.fua else ""),
                  f"  kernel queue ({report['queue_dir']}):"]
        for name, (attr, in_bytes) in _QUEUE_NAMES.items():
            value = report["queue"][name]
            shown = str(value // 1024) if attr.endswith("_kb") else (
                _bytes(value) if in_bytes else str(value))
            lines.append(f"    {attr:<24} {shown}")
        lines.append("  host_device limits (QEMU 7.2 file-posix, cache.direct=on):")
    else:
        lines += [f"{report['graph']}",
                  "  nodes: " + " -> ".join(node["driver"] for node in report["nodes"]),
                  "  graph limits:"]
    limits = BlockLimits(**report["limits"])
    for name, label in _LIMIT_NAMES.items():
        lines.append(f"    {label:<24} {_limit(name, getattr(limits, name))}")
    return "\n".join(lines)


def report_for(dev: str) -> dict[str, Any]:
    """A block device's report, or a graph's for anything :func:`rig.open` takes."""
    if "\0" in dev:
        raise ConfigError(f"{shown(dev)}: not a device, image or graph (it holds a NUL byte)")
    try:
        st = os.stat(dev)
    except OSError:
        st = None
    if st is not None and stat.S_ISBLK(st.st_mode):
        return device_report(dev)
    if st is not None and stat.S_ISCHR(st.st_mode):
        raise ConfigError(f"{printable(dev)}: a character device, not a block device (for a "
                          "SCSI generic device: rig sg inq DEV)")
    if st is None and "=" not in dev and not dev.startswith("json:"):
        raise ConfigError(f"{printable(dev)}: no such device or image (give a block device, "
                          "an image, json:{...} or key=value,... graph options)")
    return graph_report(dev)


def show(args: argparse.Namespace) -> int:
    """Print DEV's limits (and write cache) as text or, with ``--json``, one JSON object."""
    report = report_for(args.device)
    if getattr(args, "json", False):
        print(json.dumps(report, indent=2))
    else:
        print(_text(report))
    return 0
