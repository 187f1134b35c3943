"""``rig export [OPTIONS] GRAPH``: serve a rig graph as ``/dev/loopN`` until stopped.

GRAPH is anything :func:`rig.open` takes: a raw image or device path, ``json:{...}`` or
``key=value,...`` options. ``--faults RULES`` puts it under a ``faults`` filter (``.toml`` or
``.json`` rules) or a ``blkdebug`` filter (any other file: a QEMU blkdebug config) under GRAPH's
format node, or under a ``raw`` node when GRAPH has none, as ``rig run`` does. The device path
is the first line on stdout, so a script can read it; SIGINT, SIGTERM or SIGHUP stop the export,
tear it down and print what it served on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from rig.cli import live_control
from rig.cli.run_cmd import rules_filter
from rig.errors import ConfigError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", metavar="GRAPH",
                        help="image or device path, json:{...} or key=value,... graph options")
    parser.add_argument("--faults", metavar="RULES",
                        help="fault rules: a .toml/.json rules file or a blkdebug .conf file")
    parser.add_argument("--block-size", type=int, default=512, choices=(512, 1024, 2048, 4096),
                        help="logical block size of the loop device (default 512)")
    parser.add_argument("--max-write", type=int, default=0, metavar="BYTES",
                        help="lower FUSE's largest WRITE (a multiple of 4096; default 1 MiB)")
    parser.add_argument("--timeout", type=float, default=0.0, metavar="SECONDS",
                        help="answer ETIMEDOUT for a request the graph has not finished in "
                        "SECONDS (default 0: wait for ever)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="requests the graph serves at once (graph worker threads, 1-64; "
                        "default 8); reads and writes no rule or filter acts on need none")
    parser.add_argument("--read-only", action="store_true", help="open the graph read-only")
    parser.add_argument("--stats", choices=("json",),
                        help="at the end, print the device's query-blockstats entry (QEMU's "
                        "field names) as one line of JSON on stdout")
    live_control.add_arguments(parser)


def graph_spec(graph: str, rules: str | None) -> Any:
    """GRAPH as given, or under the filter that RULES asks for."""
    if rules is None:
        return graph
    if not os.path.isfile(rules):
        raise ConfigError(f"--faults: {rules}: no such file")
    from rig.core.graph import spec_to_flat

    return rules_filter(spec_to_flat(graph), rules)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Our handlers for the stop signals, installed before libfuse starts: libfuse installs its
    own only where a signal is at its default, and its SIGTERM would just end the FUSE loop."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


_NOUNS = {"read": "reads", "write": "writes", "zero": "write-zeroes", "discard": "discards",
          "flush": "flushes"}


def _served(stats: dict[str, object]) -> str:
    """``3 reads (1 failed), 4 writes, 1 flushes`` from a backend's stats."""
    parts = []
    for kind, noun in _NOUNS.items():
        ops, failed = stats[f"{kind}_ops"], stats[f"{kind}_failed"]
        if ops or failed:
            parts.append(f"{ops} {noun}" + (f" ({failed} failed)" if failed else ""))
    return ", ".join(parts) or "no requests"


def run(args: argparse.Namespace) -> int:
    """Export GRAPH until a stop signal arrives."""
    import rig
    from rig.drivers.export import export

    stop = threading.Event()
    threads = {} if args.threads is None else {"threads": args.threads}
    live_control.check(args)
    spec = graph_spec(args.graph, args.faults)
    with _stop_on_signals(stop), rig.open(spec, read_only=args.read_only,
                                          **live_control.open_options(args)) as blk, \
            export(blk, block_size=args.block_size, max_write=args.max_write,
                   request_timeout=args.timeout, **threads) as ex, \
            live_control.live_control(args, blk, ex.path, "rig export", quit=stop.set):
        print(ex.path, flush=True)
        print(f"rig export: {ex.path} serves {args.graph} ({blk.getlength()} bytes); "
              "stop with Ctrl-C or SIGTERM", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
        timed_out = ex.operations.timed_out
    print(f"rig export: {ex.path} stopped after {_served(blk.stats.as_dict())}"
          + (f"; {timed_out} timed out" if timed_out else ""), file=sys.stderr)
    if args.stats == "json":
        print(json.dumps(live_control.blockstats(blk, ex.path)), flush=True)
    return 0
