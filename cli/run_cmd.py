"""``rig run [--faults RULES] [--size SIZE | IMAGE] -- CMD ARGS...``: run a command against an
exported device (``RIG_DEV=/dev/loopN``), tear everything down, return the command's status.

The graph is a ``file`` node on IMAGE (or on a sparse scratch file of SIZE, removed afterwards),
under a ``faults`` filter when RULES is a ``.toml``/``.json`` rules file, or under a ``blkdebug``
filter and a ``raw`` format node for any other RULES file (a blkdebug config): the graph of
``qemu-io -f raw blkdebug:RULES:IMAGE``, so the config fails the same requests.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from typing import Any

from rig.cli import live_control
from rig.cli.on_device import export_and_run
from rig.cli.scratch import scratch_image
from rig.errors import ConfigError

_RULES_SUFFIXES = (".toml", ".json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--faults", metavar="RULES",
                        help="fault rules: a .toml/.json rules file or a blkdebug .conf file")
    parser.add_argument("--size", metavar="SIZE",
                        help="export a sparse scratch file of SIZE (e.g. 16M) instead of IMAGE")
    live_control.add_arguments(parser)
    parser.add_argument("rest", nargs=argparse.REMAINDER, metavar="[IMAGE] -- CMD ARGS",
                        help="the raw image to export (or --size), then the command to run "
                        "with RIG_DEV set to the device (options go before IMAGE)")


def rules_filter(leaf: dict[str, Any], rules: str) -> dict[str, Any]:
    """``leaf`` under a faults filter (RULES is ``.toml``/``.json``), or with a blkdebug filter
    (any other RULES file: a QEMU blkdebug config) where ``qemu-io -f FMT blkdebug:RULES:IMG``
    puts it: between a format node and its file, under a raw node when ``leaf`` has no format
    (the events a format emits, ``read_aio``/``write_aio``..., are what arms blkdebug's rules).
    ``leaf`` is nested (``{"file": {...}}``) or flat (``{"file.filename": ...}``) options."""
    if rules.endswith(_RULES_SUFFIXES):
        return {"driver": "faults", "rules": rules, "file": leaf}
    from rig.core.graph import FORMAT_DRIVERS

    if leaf.get("driver") not in FORMAT_DRIVERS or isinstance(leaf.get("file"), str):
        return {"driver": "raw", "file": {"driver": "blkdebug", "config": rules, "image": leaf}}
    top = {k: v for k, v in leaf.items() if k != "file" and not k.startswith("file.")}
    image = {k[len("file."):]: v for k, v in leaf.items() if k.startswith("file.")}
    if isinstance(leaf.get("file"), dict):
        image.update(leaf["file"])
    return {**top, "file": {"driver": "blkdebug", "config": rules, "image": image}}


def graph_spec(filename: str, rules: str | None) -> dict[str, Any]:
    """The graph ``rig run`` exports: a file node, under a faults or blkdebug filter."""
    leaf: dict[str, Any] = {"driver": "file", "filename": filename}
    return leaf if rules is None else rules_filter(leaf, rules)


@contextlib.contextmanager
def _image(args: argparse.Namespace) -> Iterator[str]:
    if args.size is None:
        yield args.image
        return
    with scratch_image(args.size, "blockrig-run-") as path:
        yield path


def _check(args: argparse.Namespace) -> list[str]:
    """Split ``[IMAGE] -- CMD ARGS`` (sets ``args.image``) and validate; returns CMD ARGS."""
    rest = list(args.rest)
    if "--" not in rest or rest.index("--") == len(rest) - 1:
        raise ConfigError("no command: rig run [--faults RULES] [--size SIZE | IMAGE] -- CMD ARGS")
    split = rest.index("--")
    before, cmd = rest[:split], rest[split + 1:]
    if len(before) > 1:
        raise ConfigError(f"unexpected arguments before '--': {' '.join(before[1:])}")
    args.image = before[0] if before else None
    if (args.size is None) == (args.image is None):
        raise ConfigError("give exactly one of --size SIZE or IMAGE")
    if args.image is not None and not os.path.isfile(args.image):
        raise ConfigError(f"{args.image}: not a regular file")
    if args.faults is not None and not os.path.isfile(args.faults):
        raise ConfigError(f"--faults: {args.faults}: no such file")
    return cmd


def run(args: argparse.Namespace) -> int:
    """Run a command against an exported device (RIG_DEV) with optional fault rules."""
    cmd = _check(args)
    live_control.check(args)
    with _image(args) as filename:
        return export_and_run(graph_spec(filename, args.faults), cmd, "rig run",
                              open_options=live_control.open_options(args),
                              control=lambda blk, dev: live_control.live_control(
                                  args, blk, dev, "rig run"))
