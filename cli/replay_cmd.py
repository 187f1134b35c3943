"""``rig replay``: re-run a repro bundle's operations and report the first divergence."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rig.cli.status import one_is_a_verdict
from rig.core.backend import BlockBackend
from rig.core.documents import loads_json
from rig.core.graph import probe_protocol
from rig.errors import ConfigError
from rig.testing import bundle as repro
from rig.testing.bundle_replay import ReplayResult, check_ops, replay
from rig.testing.ops import describe_op

DESCRIPTION = """\
Re-run the operation sequence of a repro bundle (written when a rig.testing state machine
fails) against the graphs it names, or against other devices or graphs (--device, --graph; each
one is a backend, replacing the bundle's). Exit status: 1 if the failure reproduces (a read or
the final content differs from the model, or an operation fails), 0 if it does not, 2 on errors.
"""

REPRODUCED, NOT_REPRODUCED = 1, 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    one_is_a_verdict(p)  # 1: reproduced
    p.add_argument("bundle", metavar="BUNDLE", help="the repro bundle (JSON)")
    p.add_argument("--device", action="append", default=[], metavar="PATH",
                   help="replay on this block device or image file (repeatable)")
    p.add_argument("--graph", action="append", default=[], metavar="JSON",
                   help="replay on this graph: a JSON object, json:{...} or key=value,... "
                   "(repeatable)")
    p.add_argument("-t", "--cache", default=None, metavar="CACHE",
                   help="cache mode for --device/--graph backends (default: the bundle's)")
    p.add_argument("--allow", action="append", default=[], metavar="DEV",
                   help="allow writing to this block device (path, serial:S or wwn:W)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import a module or .py file first (one that registers a custom driver "
                   "the bundle's graphs use)")


def import_plugin(name: str) -> None:
    """Import ``name``: a module name, or a ``.py`` file (its directory joins ``sys.path``).
    One that cannot be imported is a ConfigError with the ImportError's message."""
    try:
        _import(name)
    except ImportError as e:
        raise ConfigError(str(e)) from None


def _import(name: str) -> None:
    if not name.endswith(".py"):
        importlib.import_module(name)
        return
    path = Path(name).resolve()
    if not path.is_file():
        raise ConfigError(f"--import {name}: no such file")
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"_rig_replay_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"--import {name}: cannot import this file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


def _graph_arg(text: str) -> Any:
    if text.lstrip().startswith("{"):
        return loads_json(text, "--graph")
    return text


def load_bundle(path: str) -> repro.Bundle:
    """The bundle at ``path``, read with the rig's bounded JSON reader (UTF-8, depth); anything
    that is not a bundle is a one-line ConfigError naming the file."""
    return repro.load(path)


def _device_spec(path: str, allow: Sequence[str]) -> dict[str, Any]:
    driver = probe_protocol(path)
    spec: dict[str, Any] = {"driver": driver, "filename": path}
    if driver == "host_device" and allow:
        spec["x-allow"] = ",".join(allow)
    return spec


def _targets(args: argparse.Namespace, b: repro.Bundle) -> list[tuple[Any, str, bool]]:
    """``(graph, cache, read_only)`` for each backend to replay on."""
    if args.device or args.graph:
        cache = args.cache or (b.backends[0].cache if b.backends else "writeback")
        specs = [_device_spec(d, args.allow) for d in args.device]
        specs += [_graph_arg(g) for g in args.graph]
        return [(spec, cache, False) for spec in specs]
    out = []
    for i, rec in enumerate(b.backends):
        if rec.graph is None:
            raise ConfigError(f"backend {i} ({rec.description or 'no description'}) was built "
                              "by the machine itself, so the bundle has no graph for it: "
                              "replay with --graph or --device")
        out.append((rec.graph, args.cache or rec.cache, rec.read_only))
    return out


def _open(graph: Any, cache: str, read_only: bool, b: repro.Bundle) -> BlockBackend:
    import rig

    try:
        return rig.open(graph, cache=cache, read_only=read_only)
    except ConfigError as e:
        missing = [(n, src) for n, src in b.driver_sources.items() if f"'{n}'" in str(e)]
        if not missing or not str(e).startswith("Unknown driver"):
            raise
        name, source = missing[0]
        raise ConfigError(f"{e}; the test that wrote the bundle registered '{name}' in "
                          f"{source}: replay with --import {source}") from None


@contextlib.contextmanager
def _opened(targets: list[tuple[Any, str, bool]], b: repro.Bundle) -> Iterator[list[BlockBackend]]:
    with contextlib.ExitStack() as stack:
        backends = []
        for graph, cache, read_only in targets:
            blk = _open(graph, cache, read_only, b)
            stack.callback(blk.close)
            backends.append(blk)
        yield backends


def _report(b: repro.Bundle, result: ReplayResult, names: list[str]) -> int:
    if b.failure.get("message"):
        print(f"recorded failure: {b.failure['message']}")
    for i, n in sorted(result.skipped_discards.items()):
        print(f"note: {names[i]} cannot take {n} of the discards (not aligned to its discard "
              "granularity): they were replaced by write_zeroes there")
    d = result.divergence
    if d is None:
        print(f"not reproduced: {len(b.ops)} operations and the final comparison agree with "
              f"the model on {', '.join(names)}")
        return NOT_REPRODUCED
    where = "initial content" if d.op_index < 0 else (
        "final content" if d.op_index >= len(b.ops)
        else f"op {d.op_index} ({describe_op(b.ops[d.op_index])})")
    print(f"reproduced at {where}: {names[d.backend]}: {d.message}")
    return REPRODUCED


def run(args: argparse.Namespace) -> int:
    """Re-run a repro bundle (exit 1: reproduced, 0: not reproduced; an error is 2, see
    ``rig.cli.status``)."""
    for name in args.imports:
        import_plugin(name)
    b = load_bundle(args.bundle)
    check_ops(b.ops, b.size)
    targets = _targets(args, b)
    if not targets:
        raise ConfigError(f"{args.bundle}: the bundle names no backend")
    with _opened(targets, b) as backends:
        names = [f"backend {i} ({blk.root.describe()})" for i, blk in enumerate(backends)]
        print(f"replaying {os.path.basename(args.bundle)}: {len(b.ops)} operations on "
              f"{len(backends)} backend(s), {b.size} bytes")
        result = replay(b.ops, backends, size=b.size, zero_on_start=b.zero_on_start)
    return _report(b, result, names)
