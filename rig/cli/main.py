"""``rig``: subcommands ``io`` (qemu-io's language), ``replay`` (repro bundles), ``crash``
(write-log crash states), ``bench``, plus those drivers register (``devices``, ``run``,
``export``, ``vm``)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from rig import __version__
from rig.cli import bench_cmd, crash_cmd, io_cmd, replay_cmd, stream_cmd
from rig.cli.errors import OneLineParser
from rig.core.registry import commands
from rig.errors import RigError


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="rig", description="blockrig: block storage test and "
                           "fault-injection rig")
    parser.add_argument("--version", action="version", version=f"rig {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    io = sub.add_parser("io", help="run qemu-io commands against an image or device",
                        description=io_cmd.DESCRIPTION,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    io_cmd.add_arguments(io)
    io.set_defaults(run=io_cmd.run)
    replay = sub.add_parser("replay", help="re-run a repro bundle of a failed property test",
                            description=replay_cmd.DESCRIPTION)
    replay_cmd.add_arguments(replay)
    replay.set_defaults(run=replay_cmd.run)
    crash = sub.add_parser("crash", help="crash states of a write log (record, check, states)",
                           description=crash_cmd.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    crash_cmd.add_arguments(crash)
    crash.set_defaults(run=crash_cmd.run)
    stream = sub.add_parser("stream", help="stream a backing chain into a qcow2 image",
                            description=stream_cmd.DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    stream_cmd.add_arguments(stream)
    stream.set_defaults(run=stream_cmd.run)
    bench = sub.add_parser("bench", help="benchmarks of the rig's own layers (throttle)")
    bench_cmd.add_arguments(bench)
    for name, (add_args, run) in sorted(commands().items()):
        p = sub.add_parser(name, help=(run.__doc__ or "").strip().splitlines()[0]
                           if run.__doc__ else None)
        add_args(p)
        p.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Die quietly on a closed pipe or Ctrl-C; the drivers' cleanup still runs (atexit, finally).
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "run", None):
            parser.print_help()
            return 2
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except RigError as e:
        sys.stderr.write(f"rig: {e}\n")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
