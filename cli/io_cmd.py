"""``rig io``: qemu-io's command line, commands and output over a rig node graph."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator

from rig.core.backend import BlockBackend
from rig.core.cache import parse_cache_mode
from rig.core.graph import open_node, spec_to_flat
from rig.core.options import parse_keyval
from rig.core.units import SizeError, parse_size
from rig.errors import ConfigError, RigError
from rig.formats import probe_format
from rig.qemuio import commands
from rig.qemuio.session import OpenOptions, Session

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:
    import argparse
    from typing import Any

DESCRIPTION = """\
Run qemu-io commands (-c, or one per line on standard input) against IMAGE: a file, a block
device, json:{...}, or with --image-opts a key=value,... graph. With --loop SIZE the rig creates a
fresh loop device for the run and removes it afterwards. Output and exit status follow qemu-io.
"""

PROBE_WARNING = (
    "WARNING: Image format was not specified for '{0}' and probing guessed raw.\n"
    "         Automatically detecting the format is dangerous for raw images, write operations"
    " on block 0 will be restricted.\n"
    "         Specify the 'raw' format explicitly to remove the restrictions.\n"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", nargs="?", metavar="IMAGE")
    p.add_argument("-c", "--cmd", action="append", default=[], metavar="CMD",
                   help="command to run (repeatable); without -c, read commands from stdin")
    p.add_argument("-f", "--format", dest="fmt", metavar="FMT", help="image format (raw)")
    p.add_argument("-r", "--read-only", action="store_true", help="open read-only")
    p.add_argument("-n", "--nocache", action="store_true", help="cache=none (O_DIRECT)")
    p.add_argument("-t", "--cache", default=None, metavar="CACHE",
                   help="none, writeback, writethrough (default), directsync, unsafe")
    p.add_argument("-d", "--discard", default="unmap", choices=("ignore", "off", "unmap", "on"))
    p.add_argument("-i", "--aio", default="threads", choices=("threads", "native", "io_uring"),
                   help="accepted for compatibility; requests run on the rig's thread pool")
    p.add_argument("-k", "--native-aio", action="store_true", help="same as -i native")
    p.add_argument("-m", "--misalign", action="store_true", help="misalign buffers by 16 bytes")
    p.add_argument("-U", "--force-share", action="store_true", help="accepted; the rig does "
                   "not take image locks")
    p.add_argument("-o", "--options", action="append", default=[], metavar="KEY=VALUE,...",
                   help="extra node options (QEMU --image-opts syntax)")
    p.add_argument("--image-opts", action="store_true", help="IMAGE is key=value,... options")
    p.add_argument("--object", action="append", default=[], metavar="TYPE,id=ID,...",
                   help="create an object (throttle-group,id=ID,x-bps-total=N,...)")
    p.add_argument("--loop", metavar="SIZE", help="run on a fresh loop device of SIZE")
    p.add_argument("--loop-block-size", type=int, default=512, choices=(512, 1024, 2048, 4096))
    p.add_argument("--loop-direct-io", action="store_true", help="loop device with direct I/O")
    p.add_argument("--allow", action="append", default=[], metavar="DEV",
                   help="allow writing to this block device (path, serial:S or wwn:W)")


def build_spec(path: str | None, o: OpenOptions, err: Any) -> tuple[dict[str, Any], bool]:
    """The flat graph options for qemu-io's (path, -f, --image-opts, -o) and whether the
    format was probed."""
    if o.image_opts:
        if path is None:
            raise ConfigError("--image-opts needs the options as the IMAGE argument")
        flat: dict[str, Any] = dict(parse_keyval(path))
        probed = False
    elif path is None:
        return _spec_from_options(o, err)
    elif path.startswith("json:"):
        flat = spec_to_flat(path)
        probed = False
    elif o.fmt is None and "driver" in (named := _extras(o)):
        return named, _place_filename(path, named, err)
    else:
        proto = spec_to_flat(path)
        fmt = o.fmt
        probed = fmt is None
        if fmt is None:
            fmt = probe_format(_probed_file(path))
            probed = fmt == "raw"  # qemu-io warns (and guards block 0) only for raw
            if probed:
                err.write(PROBE_WARNING.format(path))
        flat = {"driver": fmt, **{f"file.{k}": v for k, v in proto.items()}}
    for extra in o.extra:
        flat.update(parse_keyval(extra))
    return flat, probed


#: Drivers that take the filename themselves; a format or filter hands it to its ``file``
#: child, blkdebug to its ``image`` child (QEMU's x-image), as QEMU's bdrv_fill_options does.
_PROTOCOLS = frozenset({"file", "host_device", "host_cdrom", "sg"})


def _extras(o: OpenOptions) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for extra in o.extra:
        flat.update(parse_keyval(extra))
    return flat


def _probed_file(path: str) -> str:
    """The file a format probe reads: the image of ``blkdebug:CONFIG:IMAGE``, else ``path``."""
    if path.startswith("blkdebug:") and path.count(":") >= 2:
        return path.split(":", 2)[2]
    return path


def _place_filename(path: str, flat: dict[str, Any], err: Any) -> bool:
    """Put IMAGE where QEMU puts a filename given with ``-o driver=...``: down the chain of
    named drivers to the node that takes a filename (probing the format of a node left without
    a driver). Whether a raw format was probed."""
    prefix = ""
    while True:
        driver = flat.get(prefix + "driver")
        if driver is None and prefix:  # a child: QEMU probes only the protocol there
            flat.setdefault(prefix + "filename", path)
            return False
        if driver is None:
            fmt = probe_format(_probed_file(path))
            flat[prefix + "driver"] = fmt
            flat.setdefault(prefix + "file.filename", path)
            if fmt == "raw":
                err.write(PROBE_WARNING.format(path))
            return fmt == "raw"
        if driver in _PROTOCOLS:
            flat.setdefault(prefix + "filename", path)
            return False
        if driver == "blkdebug" and path.startswith("blkdebug:") and path.count(":") >= 2:
            config, path = path[len("blkdebug:"):].split(":", 1)  # blkdebug:CONFIG:IMAGE
            if config:
                flat.setdefault(prefix + "config", config)
        prefix += "image." if driver == "blkdebug" else "file."


def _spec_from_options(o: OpenOptions, err: Any) -> tuple[dict[str, Any], bool]:
    """``open -o driver=file,filename=X``: the whole graph is in the options. Without a driver
    the format is probed from ``file.filename``, as QEMU does."""
    flat = _extras(o)
    if not flat:
        raise ConfigError("no image given (give IMAGE, or --loop SIZE)")
    probed = False
    if "driver" not in flat:
        if not any(k == "file" or k.startswith("file.") for k in flat):
            raise ConfigError("Must specify either driver or file")
        name = flat.get("file.filename") or flat.get("file")
        fmt = probe_format(name) if isinstance(name, str) else "raw"
        probed = fmt == "raw"
        if probed:
            err.write(PROBE_WARNING.format(name))
        flat["driver"] = fmt
    return flat, probed


def make_opener(allow: list[str], err: Any) -> Any:
    def opener(path: str | None, o: OpenOptions) -> BlockBackend:
        mode = parse_cache_mode(o.cache)
        flat, probed = build_spec(path, o, err)
        policy = error_policy(flat)
        defaults: dict[str, Any] = {
            "cache.direct": mode.direct,
            "cache.no-flush": mode.no_flush,
            "read-only": o.read_only,
            "discard": o.discard,
        }
        if allow:
            key = "file.x-allow" if any(k.startswith("file.") for k in flat) else "x-allow"
            flat.setdefault(key, ",".join(allow))
        if o.aio != "threads":
            flat.setdefault("file.aio", o.aio)
        if o.copy_on_read and o.read_only:
            raise ConfigError("Can't use copy-on-read on read-only device")
        for wanted, driver in ((o.snapshot, "overlay"), (o.copy_on_read, "copy-on-read")):
            if wanted:  # QEMU's -s and -C: an implicit node on top of the image
                flat = {"driver": driver, **{f"file.{k}": v for k, v in flat.items()}}
        root = open_node(flat, defaults=defaults)
        image = root
        for wanted in (o.copy_on_read, o.snapshot):
            if wanted:
                image.implicit = True  # type: ignore[attr-defined]
                image = image.children["file"]
        if probed:
            image.probed = True  # type: ignore[attr-defined]
        # qemu-io's observable behaviour includes QEMU 7.2 swallowing a failed RMW read.
        return BlockBackend(root, write_cache=mode.writeback, read_only=o.read_only or None,
                            swallow_rmw_read_errors=True,
                            on_read_error=policy.get("on_read_error", "report"),
                            on_write_error=policy.get("on_write_error", "report"))

    return opener


#: ``-o rerror=...,werror=...``: QEMU's drive options for the error policy (qemu-io itself has
#: no such keys). Only what needs no control channel: a stopped request would park rig io's one
#: command loop for good, so ``stop`` and ``enospc`` are for ``rig export`` / ``rig run --qmp``.
POLICY_KEYS = {"rerror": "on_read_error", "werror": "on_write_error"}
IO_POLICIES = ("report", "ignore")


def error_policy(flat: dict[str, Any]) -> dict[str, str]:
    """Take ``rerror``/``werror`` out of the top level of ``flat``: the backend's keyword
    arguments, or ConfigError for a value rig io cannot serve."""
    from rig.core.values import shown

    policy: dict[str, str] = {}
    for key, kwarg in POLICY_KEYS.items():
        if key not in flat:
            continue
        value = flat.pop(key)
        if value in ("stop", "enospc"):
            flag = "--on-read-error" if key == "rerror" else "--on-write-error"
            raise ConfigError(f"{key}={value}: rig io cannot resume a stopped request; use rig "
                              f"export or rig run with {flag}={value} --qmp SOCKET")
        if value not in IO_POLICIES:
            raise ConfigError(f"{key}: {shown(value)} is not one of report, ignore (stop and "
                              "enospc: rig export/run --qmp)")
        policy[kwarg] = value
    return policy


@contextlib.contextmanager
def loop_device(args: argparse.Namespace) -> Iterator[str | None]:
    if not args.loop:
        yield None
        return
    try:
        size = parse_size(args.loop)
    except SizeError:
        raise ConfigError(f"--loop: not a size: {args.loop!r} (e.g. 64M)") from None
    if size <= 0 or size % args.loop_block_size:
        raise ConfigError(f"--loop: the size must be a positive multiple of the block size "
                          f"{args.loop_block_size}")
    from rig.drivers.loop import scratch_loop

    with scratch_loop(size, block_size=args.loop_block_size, direct_io=args.loop_direct_io,
                      unlinked=True) as dev:
        yield str(dev.path)


def create_objects(specs: list[str]) -> None:
    """qemu-io's ``--object``: only ``throttle-group`` exists in the rig. Limits are ``x-NAME``
    (or ``limits.NAME``) with QEMU's names; errors are QEMU's messages."""
    for spec in specs:
        kind, _, rest = spec.partition(",")
        if "=" in kind:  # qom-type=throttle-group,...
            rest, kind = spec, ""
        props = parse_keyval(rest)
        kind = props.pop("qom-type", kind)
        if kind != "throttle-group":
            raise ConfigError(f"Parameter 'qom-type' does not accept value '{kind}'")
        name = props.pop("id", None)
        if name is None:
            raise ConfigError("Parameter 'id' is missing")
        values: dict[str, str] = {}
        for key, value in props.items():
            for prefix in ("x-", "limits."):
                if key.startswith(prefix):
                    values[key[len(prefix):]] = value
                    break
            else:
                raise ConfigError(f"Parameter '{key}' is unexpected")
        from rig.throttle.group import GROUPS  # only for --object: not at start-up
        from rig.throttle.limits import ThrottleLimits

        GROUPS.create(name, ThrottleLimits.from_mapping(values, "x-"))


def run(args: Any) -> int:
    """Run parsed arguments (:class:`rig.qemuio.cmdline.Args`, or argparse's namespace)."""
    from rig.qemuio.cmdline import prog_name

    out, err = sys.stdout, sys.stderr
    name = prog_name()
    try:
        create_objects(args.object)
    except ConfigError as e:
        err.write(f"{name}: {e}\n")
        return 1
    if args.loop and args.image:
        err.write(f"{name}: error: --loop creates its own device; do not also give IMAGE\n")
        return 2
    cache = args.cache or ("none" if args.nocache else "writethrough")
    try:
        parse_cache_mode(cache)
    except ConfigError:
        err.write(f"{name}: Invalid cache option: {cache}\n")
        return 1
    aio = "native" if args.native_aio else args.aio
    defaults = OpenOptions(fmt=args.fmt, cache=cache, read_only=args.read_only,
                           discard=args.discard, aio=aio, image_opts=args.image_opts,
                           force_share=args.force_share, extra=tuple(args.options),
                           copy_on_read=getattr(args, "copy_on_read", False),
                           snapshot=getattr(args, "snapshot", False))
    try:
        with loop_device(args) as loop_path:
            image = args.image
            if loop_path is not None:
                image = loop_path
                defaults = OpenOptions(**{**defaults.__dict__, "fmt": args.fmt or "raw"})
            allow = list(args.allow) + ([loop_path] if loop_path else [])
            session = Session(opener=make_opener(allow, err), out=out, err=err,
                              defaults=defaults, misalign=args.misalign, prog=name)
            session.verbose_errors = getattr(args, "verbose_errors", False)
            if image is not None and session.open(image) < 0:
                return 1
            try:
                return run_commands(session, args.cmd)
            finally:
                session.close()
                out.flush()
    except RigError as e:
        err.write(f"{name}: {e}\n")
        return 1


def qemu_stdio() -> None:
    """Buffer standard output as qemu-io's C stdio does, whatever PYTHONUNBUFFERED says: in
    blocks of the file's st_blksize unless it is a terminal, so on a pipe stderr's lines come
    before the stdout written ahead of them (qemu-iotests' reference output holds that order,
    026). Standard error stays unbuffered."""
    import io
    import os

    old = sys.__stdout__
    if old is None or sys.stdout is not old:
        return  # replaced by a caller (pytest's capture): its business
    try:
        if old.isatty():
            return
        size = os.fstat(1).st_blksize or 4096
        binary = io.BufferedWriter(io.FileIO(1, "w", closefd=False), buffer_size=size)
    except (OSError, ValueError, AttributeError):
        return  # no usable fd 1: leave it as it is
    old.flush()
    sys.stdout = io.TextIOWrapper(binary, encoding=old.encoding, errors=old.errors,
                                  write_through=True)


def main(argv: list[str]) -> int:
    """``rig io ARGS``: qemu-io's own command line (:mod:`rig.qemuio.cmdline`), not argparse, so
    an unknown option gets qemu-io's message and usage, and nothing else is parsed first."""
    from rig.qemuio import cmdline

    name = cmdline.prog_name()
    try:
        args = cmdline.parse(argv)
    except cmdline.UsageError as e:
        if str(e):
            sys.stderr.write(f"{e}\n")
        sys.stdout.write(cmdline.USAGE.format(name=name))
        return 1
    except cmdline.BadValue as e:
        sys.stderr.write(f"{name}: {e}\n")
        return 1
    if args.help:
        sys.stdout.write(cmdline.USAGE.format(name=name))
        return 0
    if args.version:
        from rig import __version__

        sys.stdout.write(f"{name} version {__version__} (blockrig; qemu-io 7.2's language)\n")
        return 0
    if args.fmt and args.image_opts:
        sys.stderr.write(f"{name}: --image-opts and -f are mutually exclusive\n")
        return 1
    qemu_stdio()
    try:
        return run(args)
    except KeyboardInterrupt:
        from rig.cli.status import INTERRUPTED

        return INTERRUPTED
    except (RigError, OSError) as e:
        import argparse  # only here: rig io parses its own command line (start-up, issue 19)

        from rig.cli.status import report

        return report(e, argparse.Namespace(rig_prog="rig io"))


def run_commands(session: Session, cmds: list[str]) -> int:
    """The ``-c`` commands, or else those on standard input (:mod:`rig.cli.io_input`)."""
    if cmds:
        failed = _run_lines(session, cmds)
    else:
        from rig.cli.io_input import StdinCommands

        with StdinCommands(session) as lines:
            failed = _run_lines(session, lines)
    if session.reap(wait=True) < 0:
        failed = True
    return 1 if failed else 0


def _run_lines(session: Session, lines: Iterable[str]) -> bool:
    """Run commands until one quits; whether any failed."""
    failed = False
    for line in lines:
        try:
            ret, quit_ = commands.run(session, line)
        except RigError as e:
            session.err.write(f"{session.prog}: {e}\n")
            ret, quit_ = -1, False
        if ret < 0:
            failed = True
        if quit_:
            break
    return failed
