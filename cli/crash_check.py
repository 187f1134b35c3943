"""``rig crash check LOG --check 'CMD'``: run a checker on every crash state of a write log.

Each state is materialized on one exported device (``/dev/loopN``, a copy-on-write overlay over
the cut's durable image, see :mod:`rig.crash.check`) and ``sh -c CMD`` runs with ``RIG_DEV``
(the device), ``RIG_STATE`` (the state's name), ``RIG_CUT``, and ``RIG_MARK`` / ``RIG_MARK_SEQ``
(the last user mark the program had written when the power went; empty and 0 for none).
Exit status 0 passes the state; anything else, a timeout, or leaving the device mounted fails it.

Failing states are printed as they are found, the first ``--shrink N`` are shrunk to the fewest
dropped writes that still fail, and a bundle (``--bundle DIR``) holds the log, the failures and
a ``repro.sh``. Exit status: 0 every state passed, 1 some failed, 2 bad input or any other error
(``rig.cli.status``: its 1 is a verdict).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rig.errors import ConfigError

if TYPE_CHECKING:
    from rig.crash.bundle import Failure, RunSettings
    from rig.crash.check import StateChecker
    from rig.crash.crashstate import CrashState
    from rig.crash.states import CrashStates

#: Checker runs one shrink may spend (``--shrink-budget``).
SHRINK_BUDGET = 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", metavar="LOG")
    parser.add_argument("--check", required=True, metavar="CMD",
                        help="shell command run on each state; $RIG_DEV is the device")
    parser.add_argument("--state", metavar="STATE",
                        help="check only this state (a name as 'rig crash states' prints it)")
    parser.add_argument("--after-mark", metavar="TEXT",
                        help="only cuts at or after the user mark TEXT")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="seconds a checker may run on one state (default 60)")
    parser.add_argument("--max-failures", type=int, default=0, metavar="N",
                        help="stop after N failing states (default 0: check every state)")
    parser.add_argument("--shrink", type=int, default=1, metavar="N",
                        help="shrink the first N failures (default 1; 0: none)")
    parser.add_argument("--shrink-budget", type=int, default=SHRINK_BUDGET, metavar="N",
                        help=f"checker runs one shrink may spend (default {SHRINK_BUDGET})")
    parser.add_argument("--bundle", metavar="DIR",
                        help="write failures here (default: rig-crash-bundle-<log name> in the "
                             "current directory, only when a state fails)")
    parser.add_argument("--no-bundle", action="store_true", help="write no bundle")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--progress", action="store_true",
                        help="draw the progress bar even when stderr is not a terminal")
    parser.add_argument("--torn", action="store_true",
                        help="in-flight writes may land sector by sector")
    parser.add_argument("--seed", type=int, default=0, help="for sampled cuts (default 0)")
    parser.add_argument("--samples", type=int, default=256,
                        help="states per cut too large to list exhaustively (default 256)")
    parser.add_argument("--max-exhaustive", type=int, default=12, metavar="N",
                        help="a cut with more than N writes in flight is sampled (default 12)")


def _validate(args: argparse.Namespace) -> None:
    if not args.check.strip():
        raise ConfigError("--check: empty command (e.g. --check 'fsck.ext4 -n $RIG_DEV')")
    if args.timeout <= 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    for name in ("max_failures", "shrink", "shrink_budget"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.bundle and args.no_bundle:
        raise ConfigError("--bundle and --no-bundle: choose one")
    if args.bundle:
        _check_bundle_dir(args.bundle)


def _check_bundle_dir(path: str) -> None:
    """Refuse a --bundle that is a device, a file, or a directory that is not empty, before any
    state is checked (the bundle itself is written at the end; a missing one is made then)."""
    from rig.core.outputs import make_output_dir

    if os.path.lexists(path):
        make_output_dir(path, "--bundle", must_be_empty=True)


def _selected(args: argparse.Namespace, states: CrashStates) -> tuple[list[CrashState] | None,
                                                                       int]:
    """The one ``--state`` (as a list), or None for "iterate", and the first cut to check."""
    from rig.crash.lookup import parse_state

    first = 0
    if args.after_mark is not None:
        try:
            first = states.log.mark_seq(args.after_mark)
        except KeyError:
            raise ConfigError(f"--after-mark: the log has no user mark {args.after_mark!r}") \
                from None
    if args.state is None:
        return None, first
    return [parse_state(states, args.state, "--state")], first


def _iterate(states: CrashStates, first: int) -> Iterator[CrashState]:
    for state in states:
        if state.cut >= first:
            yield state


def _count(states: CrashStates, first: int) -> int:
    if first == 0:
        return states.count()
    return sum(1 for _ in _iterate(states, first))


def _settings(args: argparse.Namespace) -> RunSettings:
    from rig.crash.bundle import RunSettings

    return RunSettings(check=args.check, torn=args.torn, seed=args.seed, samples=args.samples,
                       timeout=args.timeout, max_exhaustive=args.max_exhaustive)


def _shrunk(checker: StateChecker, failure: Failure, budget: int) -> Failure:
    from rig.crash.bundle import Failure
    from rig.crash.shrink import shrink

    result = shrink(checker.states, failure.outcome.state, checker.fails, budget=budget)
    if result.state == failure.outcome.state:
        return Failure(failure.outcome, None, (), result.calls, result.minimal)
    again = checker.check(result.state)  # its output, for the bundle
    dropped = tuple(f"#{seq}" if idx < 0 else f"#{seq} sector {idx}"
                    for seq, idx in result.dropped)
    return Failure(failure.outcome, again, dropped, result.calls + 1, result.minimal)


def _check_all(args: argparse.Namespace, log_path: str) -> int:
    import rig
    from rig.cli.progress import ProgressBar
    from rig.crash.bundle import Failure, failure_json, write_bundle
    from rig.crash.check import StateChecker
    from rig.crash.logfile import read_log
    from rig.crash.states import CrashStates
    from rig.drivers.export import export
    from rig.drivers.procs import owner_env
    from rig.filters.overlay import OverlayFilter

    log = read_log(log_path)
    if log.tail_note:
        print(f"rig crash: {log_path}: {log.tail_note}", file=sys.stderr)
    try:
        states = CrashStates(log, torn=args.torn, seed=args.seed, samples=args.samples,
                             max_exhaustive=args.max_exhaustive)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    only, first = _selected(args, states)
    total = len(only) if only is not None else _count(states, first)
    size = log.header.device_size
    block = min(4096, max(512, log.header.logical_block_size))
    graph = {"driver": "overlay", "chunk-size": max(4096, block),
             "file": {"driver": "memory", "size": size}}
    bar = ProgressBar("checking", total, force=args.progress)
    failures: list[Failure] = []
    started = time.monotonic()
    with rig.open(graph) as blk, export(blk, block_size=block) as ex:
        node = blk.root
        assert isinstance(node, OverlayFilter)
        checker = StateChecker(states, node, ex, args.check, owner=owner_env(),
                               timeout=args.timeout)
        todo = only if only is not None else _iterate(states, first)
        for n, state in enumerate(todo, 1):
            outcome = checker.check(state)
            if not outcome.ok:
                failures.append(Failure(outcome))
                if not args.json:
                    bar.say(f"FAIL {state}: {outcome.reason()}")
            bar.update(n, f"{len(failures)} failed, {checker.stats.rate_per_minute():.0f}/min")
            if args.max_failures and len(failures) >= args.max_failures:
                break
        checked = checker.stats.states
        bar.update(checked, f"{len(failures)} failed", force=True)
        bar.close()
        for i in range(min(args.shrink, len(failures)) if only is None else 0):
            if not args.json:
                print(f"rig crash: shrinking {failures[i].outcome.state} ...", file=sys.stderr)
            failures[i] = _shrunk(checker, failures[i], args.shrink_budget)
    seconds = time.monotonic() - started
    bundle = None
    if failures and not args.no_bundle:
        directory = args.bundle or _default_bundle(log_path)
        bundle = write_bundle(directory, log_path, _settings(args), failures, "--bundle")
    summary: dict[str, Any] = {
        "log": log_path, "states": total, "checked": checked, "failed": len(failures),
        "seconds": round(seconds, 3), "per_minute": round(60 * checked / seconds, 1)
        if seconds else 0.0, "exhaustive": states.exhaustive(), "torn": args.torn,
        "seed": args.seed, "bundle": bundle,
        "failures": [failure_json(f, f.smallest.output.decode(errors="replace"))
                     for f in failures]}
    if args.json:
        print(json.dumps(summary))
    else:
        _print_summary(summary, failures)
    return 1 if failures else 0


def _default_bundle(log_path: str) -> str:
    base = f"rig-crash-bundle-{os.path.basename(log_path)}"
    name, n = base, 1
    while os.path.exists(name):
        n += 1
        name = f"{base}.{n}"
    return name


def _print_summary(summary: dict[str, Any], failures: list[Failure]) -> None:
    print(f"rig crash: {summary['checked']} of {summary['states']} states checked in "
          f"{summary['seconds']:.1f} s ({summary['per_minute']:.0f}/min), "
          f"{summary['failed']} failed")
    for f in failures:
        if f.shrunk is not None:
            how = "1-minimal" if f.minimal else "not minimal: budget spent"
            print(f"  {f.outcome.state}: {f.outcome.reason()}\n    shrunk to {f.shrunk.state} "
                  f"(drops {', '.join(f.dropped) or 'nothing'}; {f.shrink_calls} checks, {how}):"
                  f" {f.shrunk.reason()}")
        else:
            print(f"  {f.outcome.state}: {f.outcome.reason()}")
        tail = f.smallest.output.decode(errors="replace").strip().splitlines()[-3:]
        for line in tail:
            print(f"    | {line}")
    if summary["bundle"]:
        print(f"  bundle: {summary['bundle']} (repro.sh re-runs the failing states)")


def run(args: argparse.Namespace) -> int:
    """Check every crash state of a write log with a command."""
    _validate(args)
    if not os.path.isfile(args.log):
        raise ConfigError(f"LOG {args.log}: no such file (make one with rig crash record)")
    return _check_all(args, args.log)
