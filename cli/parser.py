"""``rig``'s argparse parser, built lazily (issue 19): each command of
:data:`rig.cli.main.COMMANDS` is a name and a help line until it is parsed; then its module is
imported and its sub-parser made. ``rig io`` parses its own command line, so it never imports
this module (nor argparse)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rig import __version__
from rig.cli.errors import OneLineParser

if TYPE_CHECKING:
    from rig.cli.main import Command


def load_command(parser: argparse.ArgumentParser, name: str, command: Command) -> None:
    """Import ``command``'s module and give its sub-parser ``parser`` its arguments."""
    module: Any = importlib.import_module(command.module)
    if command.description is not None:
        parser.description = getattr(module, command.description)
    if command.raw:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    module.add_arguments(parser)
    if command.has_run:
        parser.set_defaults(run=module.run, rig_prog=f"rig {name}")


class _Parsers(dict[str, Any]):
    """Command name -> its sub-parser, made (and its module imported) on first lookup; until
    then the name maps to None, so ``rig --help`` and argparse's choice check need no module."""

    def __init__(self, parser_class: type[argparse.ArgumentParser], prog: str) -> None:
        super().__init__()
        self.parser_class = parser_class
        self.prog = prog
        self.commands: dict[str, Command] = {}

    def __getitem__(self, name: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser | None = super().__getitem__(name)
        if parser is None:
            parser = self.parser_class(prog=f"{self.prog} {name}")
            self[name] = parser
            load_command(parser, name, self.commands[name])
        return parser


class LazySubParsers(argparse._SubParsersAction):  # type: ignore[type-arg]
    """The commands: each is a name and a help line until it is parsed (argparse makes every
    sub-parser up front, each costing gettext look-ups)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parsers = _Parsers(self._parser_class, self._prog_prefix)
        self._name_parser_map = self.choices = self.parsers

    def add_command(self, name: str, command: Command) -> None:
        self._choices_actions.append(self._ChoicesPseudoAction(name, (), command.help))
        self.parsers.commands[name] = command
        dict.__setitem__(self.parsers, name, None)


def build_parser(commands: Mapping[str, Command]) -> argparse.ArgumentParser:
    parser = OneLineParser(prog="rig", description="blockrig: block storage test and "
                           "fault-injection rig")
    parser.add_argument("--version", action="version", version=f"rig {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser,
                                action=LazySubParsers)
    assert isinstance(sub, LazySubParsers)
    for name, command in commands.items():
        sub.add_command(name, command)
    return parser
