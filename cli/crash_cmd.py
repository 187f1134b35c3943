"""``rig crash``: look at a write log's crash states and materialize one.

* ``rig crash states LOG [--torn] [--seed N] [--samples N] [--limit N] [--json]``: the cut
  points of the log (before each FUA write, before each flush that makes something durable, and
  the end), how many states each gives, and the states' names (``cut 9 keep 3,5 torn 7[0-2]``).
* ``rig crash materialize LOG STATE TARGET [--torn] [--seed N]``: write that state's device
  content onto TARGET (an image or device path, ``json:{...}`` or ``key=value`` graph; it must
  be the log's size), then flush.
* ``rig crash record --log LOG --size SIZE -- CMD ARGS``: run CMD against a fresh, zeroed
  device of SIZE exported as ``$RIG_DEV`` (/dev/loopN) with a ``recorder`` node in its graph, so
  LOG holds every write, FUA, flush and discard the program's I/O caused; exits with CMD's
  status.

  Inside CMD, ``rig crash mark TEXT`` appends a user mark to LOG, in order with the I/O that
  completed before it (e.g. after an fsync returned: ``rig crash mark committed 5``).
* ``rig crash check LOG --check 'CMD'``: run CMD on every crash state of LOG, each materialized
  on an exported device (``rig.cli.crash_check``); failures are shrunk and bundled.

Bad input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rig.errors import ConfigError

if TYPE_CHECKING:
    from rig.core.backend import BlockBackend
    from rig.crash.logfile import WriteLog
    from rig.crash.states import CrashStates


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rig.cli import crash_check, crash_mark
    from rig.cli.status import one_is_a_verdict

    sub = parser.add_subparsers(dest="crash_cmd", metavar="{states,materialize,record,check,mark}",
                                required=True)
    states = sub.add_parser("states", help="list a write log's crash states")
    states.add_argument("log", metavar="LOG")
    states.add_argument("--limit", type=int, default=20, metavar="N",
                        help="names to print (default 20; 0: all)")
    states.add_argument("--json", action="store_true", help="one JSON object on stdout")
    mat = sub.add_parser("materialize", help="write one crash state onto an image or device")
    mat.add_argument("log", metavar="LOG")
    mat.add_argument("state", metavar="STATE", help="a state's name, as 'states' prints it")
    mat.add_argument("target", metavar="TARGET", help="image, device or graph to write")
    rec = sub.add_parser("record", help="record a program's I/O on an exported device")
    rec.add_argument("--log", required=True, metavar="LOG", help="the write log to create")
    rec.add_argument("--size", required=True, metavar="SIZE",
                     help="size of the fresh zeroed device (e.g. 64M)")
    rec.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                     help="the command, run with RIG_DEV set to the device")
    check = sub.add_parser("check", help="run a checker on every crash state of a write log")
    crash_check.add_arguments(check)
    one_is_a_verdict(check)  # 1: a state failed
    crash_mark.add_arguments(sub.add_parser(
        "mark", help="put a user mark into the log of the rig crash record running this"))
    for p in (states, mat):
        p.add_argument("--torn", action="store_true",
                       help="in-flight writes may land sector by sector")
        p.add_argument("--seed", type=int, default=0, help="for sampled cuts (default 0)")
        p.add_argument("--samples", type=int, default=256,
                       help="states per cut too large to list exhaustively (default 256)")


def _states(args: argparse.Namespace) -> tuple[WriteLog, CrashStates]:
    from rig.crash.logfile import read_log
    from rig.crash.states import CrashStates

    log = read_log(args.log)
    if log.tail_note:
        print(f"rig crash: {args.log}: {log.tail_note}", file=sys.stderr)
    try:
        return log, CrashStates(log, torn=args.torn, seed=args.seed, samples=args.samples)
    except ValueError as e:
        raise ConfigError(f"{args.log}: {e}") from None


def _list(args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise ConfigError(f"--limit must be >= 0, got {args.limit}")
    log, states = _states(args)
    names: list[str] = []
    for state in states:
        if args.limit and len(names) >= args.limit:
            break
        names.append(str(state))
    summary = {"log": args.log, "device_size": log.header.device_size,
               "records": len(log.records), "cuts": states.cuts(), "states": states.count(),
               "exhaustive": states.exhaustive(), "torn": args.torn, "seed": args.seed,
               "names": names}
    if args.json:
        print(json.dumps(summary))
        return 0
    kind = "exhaustive" if summary["exhaustive"] else f"sampled with seed {args.seed}"
    print(f"{args.log}: {summary['records']} records, {len(summary['cuts'])} cut points, "
          f"{summary['states']} crash states ({kind}{', torn' if args.torn else ''})")
    for name in names:
        print(f"  {name}")
    if len(names) < summary["states"]:
        print(f"  ... {summary['states'] - len(names)} more (--limit 0 lists all)")
    return 0


def _materialize(args: argparse.Namespace) -> int:
    import rig
    from rig.crash.log_replay import materialize
    from rig.crash.lookup import parse_state

    log, states = _states(args)
    state = parse_state(states, args.state, "STATE")
    with rig.open(args.target) as blk:
        if blk.getlength() != log.header.device_size:
            raise ConfigError(f"{args.target}: {blk.getlength()} bytes, but the log is of a "
                           f"{log.header.device_size}-byte device")
        materialize(log, state, blk, states=states)
    print(f"rig crash: wrote {state} onto {args.target}")
    return 0


def _record(args: argparse.Namespace) -> int:
    from rig.cli.on_device import export_and_run
    from rig.cli.scratch import scratch_image
    from rig.core.outputs import check_output
    from rig.crash.logfile import read_log

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise ConfigError("no command: rig crash record --log LOG --size SIZE -- CMD ARGS")
    # A log is never overwritten, and never a device (rig.core.outputs).
    check_output(args.log, "--log", replace=False)
    with scratch_image(args.size, "blockrig-crash-") as image:
        graph = {"driver": "recorder", "log": args.log,
                 "file": {"driver": "file", "filename": image}}
        status = export_and_run(graph, cmd, "rig crash", extra_env=_marks)
    log = read_log(args.log)
    print(f"rig crash: {len(log.records)} records in {args.log} (exit status {status})",
          file=sys.stderr)
    return status


@contextlib.contextmanager
def _marks(blk: BlockBackend) -> Iterator[dict[str, str]]:
    """The mark server of the recorder at the root of ``blk``, while the program runs: its
    socket's path for the program's environment."""
    from rig.crash.marks import MarkServer, mark_env
    from rig.drivers.procs import DeathWatch
    from rig.filters.recorder import RecorderFilter

    recorder = blk.root
    assert isinstance(recorder, RecorderFilter)
    with MarkServer(recorder, DeathWatch) as marks:
        yield mark_env(marks)


def run(args: argparse.Namespace) -> int:
    """Crash states of a write log (``states``, ``materialize``, ``record``, ``check``,
    ``mark``)."""
    if args.crash_cmd == "record":
        return _record(args)
    if args.crash_cmd == "check":
        from rig.cli import crash_check

        return crash_check.run(args)
    if args.crash_cmd == "mark":
        from rig.cli import crash_mark

        return crash_mark.run(args)
    return _list(args) if args.crash_cmd == "states" else _materialize(args)
