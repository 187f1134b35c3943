"""What ``rig export`` and ``rig run`` share for steering a running export: the error policy
(``--on-read-error`` / ``--on-write-error``, QEMU's rerror/werror values) and QMP
(``--qmp SOCKET``, :mod:`rig.qmp`), plus the line on stderr for every request the ``stop``
policy parks (docs/qmp.md).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from rig.core.backend import BlockBackend, PolicyEvent
from rig.errors import ConfigError

READ_ACTIONS = ("report", "ignore", "stop")
WRITE_ACTIONS = ("report", "ignore", "stop", "enospc")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--qmp", metavar="SOCKET",
                        help="serve QMP on the unix socket SOCKET (query-blockstats, cont, "
                        "x-rig-add-rule ...; docs/qmp.md)")
    parser.add_argument("--on-read-error", choices=READ_ACTIONS, default="report",
                        help="what a failed read does: report it (default), ignore it, or "
                        "stop the device until 'cont' over QMP")
    parser.add_argument("--on-write-error", choices=WRITE_ACTIONS, default="report",
                        help="as --on-read-error for writes, flushes, discards and "
                        "write-zeroes; enospc stops on ENOSPC and reports other errors")


def check(args: argparse.Namespace) -> None:
    """A stop needs someone to resume it: the stop policies need ``--qmp``."""
    for flag, value in (("--on-read-error", args.on_read_error),
                        ("--on-write-error", args.on_write_error)):
        if value in ("stop", "enospc") and args.qmp is None:
            raise ConfigError(f"{flag}={value} parks failed requests until 'cont': it needs "
                              "--qmp SOCKET to resume them")


def open_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`rig.open` for the error policy."""
    return {"on_read_error": args.on_read_error, "on_write_error": args.on_write_error}


def stop_reporter(who: str, device: str, node: str) -> Callable[[PolicyEvent], None]:
    """A backend listener that says on stderr which request the ``stop`` policy parked."""

    def report(ev: PolicyEvent) -> None:
        if ev.kind == "io-error" and ev.action == "stop":
            name = errno.errorcode.get(ev.errno, str(ev.errno))
            where = "" if ev.op == "flush" else f" of {ev.length} bytes at offset {ev.offset}"
            sys.stderr.write(f"{who}: {device} stopped: {ev.op}{where} on node {node} failed: "
                             f"{os.strerror(ev.errno)} ({name}); 'cont' over QMP retries it, "
                             "'x-rig-fail-stopped' fails it\n")
            sys.stderr.flush()
        elif ev.kind == "resume":
            sys.stderr.write(f"{who}: {device} resumed\n")
            sys.stderr.flush()

    return report


@contextlib.contextmanager
def live_control(args: argparse.Namespace, blk: BlockBackend, device: str, who: str,
                 quit: Callable[[], None] | None = None) -> Iterator[None]:
    """Report stops on stderr and, with ``--qmp``, serve QMP for ``blk`` (exported as
    ``device``) while the block runs."""
    from rig.qmp.block import node_names

    root = blk.root
    reporter = stop_reporter(who, device, node_names(root)[id(root)])
    blk.listeners.append(reporter)
    try:
        if args.qmp is None:
            yield
            return
        from rig.qmp import serve

        with serve(args.qmp, blk, qdev=device, quit=quit):
            yield
    finally:
        blk.listeners.remove(reporter)


def blockstats(blk: BlockBackend, device: str) -> dict[str, Any]:
    """The device's ``query-blockstats`` entry, as ``rig export --stats json`` prints it."""
    from rig.qmp.block import blockstats_entry

    return blockstats_entry(blk, "disk", device)
