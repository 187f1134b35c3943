"""``rig``: one subcommand per module of this package (``io``, ``replay``, ``crash``, ``stream``,
``bench``, ``devices``, ``export``, ``run``, ``sg``, ``vm``), and the one place where an error a
command lets out becomes one line on stderr and an exit status (:mod:`rig.cli.status`).

The parser knows each command by the name and help line in :data:`COMMANDS`; a command's module
(and with it whatever it uses: formats, exports, the VM lab...) is imported only when that
command is parsed, so ``rig io`` does not pay for ``rig vm`` (issue 19: start-up).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rig.cli.status import BAD_INPUT, INTERRUPTED, report
from rig.errors import RigError

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:  # argparse loads with the parser (cli/parser.py): rig io does without it
    import argparse


class Command:
    """A subcommand: its module (``add_arguments``, ``run``), its line in ``rig --help``, the
    module attribute that is its ``--help`` text, whether that text is pre-formatted, and
    whether the module has the ``run`` (False for ``rig bench KIND``, whose kinds set it).
    A plain class: a NamedTuple's code generation costs start-up too."""

    __slots__ = ("description", "has_run", "help", "module", "raw")

    def __init__(self, module: str, help: str, description: str | None = None, *,
                 raw: bool = False, has_run: bool = True) -> None:
        self.module = module
        self.help = help
        self.description = description
        self.raw = raw
        self.has_run = has_run


COMMANDS: dict[str, Command] = {
    "io": Command("rig.cli.io_cmd", "run qemu-io commands against an image or device",
                  "DESCRIPTION", raw=True),
    "replay": Command("rig.cli.replay_cmd", "re-run a repro bundle of a failed property test",
                      "DESCRIPTION"),
    "crash": Command("rig.cli.crash_cmd", "crash states of a write log (record, check, states)",
                     "__doc__", raw=True),
    "stream": Command("rig.cli.stream_cmd", "stream a backing chain into a qcow2 image",
                      "DESCRIPTION", raw=True),
    "bench": Command("rig.cli.bench_cmd", "benchmarks of the rig's own layers (throttle)",
                     has_run=False),
    "devices": Command("rig.cli.devices_cmd", "Print the device list; returns the exit status."),
    "export": Command("rig.cli.export_cmd", "Export GRAPH until a stop signal arrives."),
    "run": Command("rig.cli.run_cmd", "Run a command against an exported device (RIG_DEV) "
                   "with optional fault rules."),
    "sg": Command("rig.cli.sg_cmd", "SCSI commands over SG_IO (inq, readcap, turs, sync, "
                  "start, stop, eject, raw, sense)."),
    "vm": Command("rig.cli.vm_cmd", "Run a command in a QEMU guest with real SCSI disks, "
                  "CD-ROM, scsi_debug, null_blk."),
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command but ``rig io`` (:mod:`rig.cli.parser`, argparse)."""
    from rig.cli.parser import build_parser as build

    return build(COMMANDS)


#: Commands that only print what they find: in a process of their own they die quietly on a
#: closed pipe (``rig io ... | head``), as qemu-io and other Unix tools do. The others serve
#: (an export, its QMP socket, a guest, a crash-mark socket) or change images: for them a
#: closed pipe or a QMP client gone in the middle of a reply is an error they handle, never a
#: death by SIGPIPE before their cleanup (seen: ``rig run --qmp`` killed by a client that sent
#: commands and closed without reading the replies).
QUIET_ON_CLOSED_PIPE = frozenset({"io", "devices"})


def entry() -> int:
    """The ``rig`` program (``[project.scripts]`` and ``python -m rig``): :func:`main` in a
    process of its own. The printing commands (:data:`QUIET_ON_CLOSED_PIPE`) die quietly on a
    closed pipe; the drivers' cleanup still runs (atexit, finally) for the signals the rig
    handles.

    Only here: :func:`main` called in-process (tests, a pytest worker, an embedding program)
    leaves the caller's signal dispositions alone, since a SIGPIPE set to default there kills
    the whole host process at its next write to a closed socket."""
    if sys.argv[1:2] and sys.argv[1] in QUIET_ON_CLOSED_PIPE:
        # _signal is the C module under signal, loaded when Python starts: the signal
        # module's enums would cost every rig start ~1 ms (issue 19).
        c_signal = __import__("_signal")
        c_signal.signal(c_signal.SIGPIPE, c_signal.SIG_DFL)
    status = main()
    if sys.argv[1:2] == ["io"]:
        exit_now(status)
    return status


def exit_now(status: int) -> None:
    """End the process with ``status`` at once, without the interpreter's teardown (freeing
    every module: ~6 ms of a one-command ``rig io``, issue 19), when that teardown has nothing
    else to do: no atexit handler registered, no thread but this one, and standard output and
    error flushed. Otherwise return, and the normal exit runs (and reports what it reports)."""
    import atexit

    threading = sys.modules.get("threading")
    if atexit._ncallbacks() or (threading is not None and threading.active_count() > 1):
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    import os

    os._exit(status)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rig ARGV`` in this process and return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["io"]:  # qemu-io's own command line and messages, no argparse (issue 19)
        from rig.cli.io_cmd import main as io_main

        return io_main(argv[1:])
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
    raise SystemExit(entry())
