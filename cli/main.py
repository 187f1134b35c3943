"""``rig``: one subcommand per module of this package (``io``, ``replay``, ``crash``, ``stream``,
``bench``, ``devices``, ``export``, ``run``, ``sg``, ``vm``), and the one place where an error a
command lets out becomes one line on stderr and an exit status (:mod:`rig.cli.status`)."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Callable, Sequence

from rig import __version__
from rig.cli import (
    bench_cmd,
    crash_cmd,
    devices_cmd,
    export_cmd,
    io_cmd,
    replay_cmd,
    run_cmd,
    sg_cmd,
    stream_cmd,
    vm_cmd,
)
from rig.cli.errors import OneLineParser
from rig.cli.status import BAD_INPUT, INTERRUPTED, report
from rig.errors import RigError

Run = Callable[[argparse.Namespace], int]


def _first_line(run: Run) -> str | None:
    return (run.__doc__ or "").strip().splitlines()[0] if run.__doc__ else None


def _command(sub: argparse._SubParsersAction[OneLineParser], name: str,
             add_arguments: Callable[[argparse.ArgumentParser], None], run: Run, *,
             help: str | None, description: str | None = None,
             formatter_class: type[argparse.HelpFormatter] = argparse.HelpFormatter) -> None:
    """``rig NAME``; the errors ``run`` lets out are reported as ``rig NAME: ...``."""
    p = sub.add_parser(name, help=help, description=description,
                       formatter_class=formatter_class)
    add_arguments(p)
    p.set_defaults(run=run, rig_prog=f"rig {name}")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="rig", description="blockrig: block storage test and "
                           "fault-injection rig")
    parser.add_argument("--version", action="version", version=f"rig {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    raw = argparse.RawDescriptionHelpFormatter
    _command(sub, "io", io_cmd.add_arguments, io_cmd.run, formatter_class=raw,
             help="run qemu-io commands against an image or device",
             description=io_cmd.DESCRIPTION)
    _command(sub, "replay", replay_cmd.add_arguments, replay_cmd.run,
             help="re-run a repro bundle of a failed property test",
             description=replay_cmd.DESCRIPTION)
    _command(sub, "crash", crash_cmd.add_arguments, crash_cmd.run, formatter_class=raw,
             help="crash states of a write log (record, check, states)",
             description=crash_cmd.__doc__)
    _command(sub, "stream", stream_cmd.add_arguments, stream_cmd.run, formatter_class=raw,
             help="stream a backing chain into a qcow2 image",
             description=stream_cmd.DESCRIPTION)
    bench = sub.add_parser("bench", help="benchmarks of the rig's own layers (throttle)")
    bench_cmd.add_arguments(bench)
    for name, module in (("devices", devices_cmd), ("export", export_cmd), ("run", run_cmd),
                         ("sg", sg_cmd), ("vm", vm_cmd)):
        _command(sub, name, module.add_arguments, module.run, help=_first_line(module.run))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Die quietly on a closed pipe or Ctrl-C; the drivers' cleanup still runs (atexit, finally).
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        return INTERRUPTED
    if not getattr(args, "run", None):
        parser.print_help()
        return BAD_INPUT
    return run_parsed(args)


def run_parsed(args: argparse.Namespace) -> int:
    """Run the command ``args`` were parsed for: its exit status, or the one for the error it
    let out (said in one line on stderr)."""
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return INTERRUPTED
    except (RigError, OSError) as e:
        return report(e, args)


if __name__ == "__main__":
    raise SystemExit(main())
