"""The table of qemu-io commands: what each command is, the decorator that adds one, and the
lookup by name or alias. :mod:`rig.qemuio.commands` and :mod:`rig.qemuio.debug_cmds` both
register into it, so neither imports the other's module for it."""

from __future__ import annotations

from collections.abc import Callable

from rig.qemuio.getopt import Parsed
from rig.qemuio.session import Session


class Command:
    """One qemu-io command (a plain class: dataclasses cost ``rig io`` start-up)."""

    __slots__ = (
        "altname",
        "argmax",
        "argmin",
        "args",
        "func",
        "name",
        "nofile_ok",
        "oneline",
        "optstring",
        "writes",
    )

    def __init__(self, name: str, altname: str | None, args: str, oneline: str, argmin: int,
                 argmax: int, optstring: str, func: Callable[[Session, Parsed], int],
                 nofile_ok: bool = False, writes: bool = False) -> None:
        self.name = name
        self.altname = altname
        self.args = args
        self.oneline = oneline
        self.argmin = argmin
        self.argmax = argmax
        self.optstring = optstring
        self.func = func
        self.nofile_ok = nofile_ok
        #: The command needs write permission on the image (qemu-io's ``.perm``): on a
        #: read-only one it fails before it parses its arguments, "Block node is read-only".
        self.writes = writes

    def __repr__(self) -> str:
        return f"Command({self.name!r}, altname={self.altname!r}, args={self.args!r})"


COMMANDS: dict[str, Command] = {}
#: name or alias -> command, rebuilt from COMMANDS when a command is added (see :func:`find`).
_INDEX: dict[str, Command] = {}


def command(name: str, args: str, oneline: str, *, alt: str | None = None, argmin: int = 0,
            argmax: int = 0, opts: str = "", nofile_ok: bool = False, writes: bool = False
            ) -> Callable[[Callable[[Session, Parsed], int]], Callable[[Session, Parsed], int]]:
    def deco(fn: Callable[[Session, Parsed], int]) -> Callable[[Session, Parsed], int]:
        COMMANDS[name] = Command(name, alt, args, oneline, argmin, argmax, opts, fn, nofile_ok,
                                 writes)
        _INDEX.clear()
        return fn
    return deco


def find(name: str) -> Command | None:
    """The command called ``name`` or aliased so (the first registered wins, as in qemu-io)."""
    if not _INDEX:
        for cmd in COMMANDS.values():
            for key in (cmd.name, cmd.altname):
                if key is not None:
                    _INDEX.setdefault(key, cmd)
    return _INDEX.get(name)
