"""GNU getopt as qemu-io's commands use it: permuted operands, glibc's error wording."""

from __future__ import annotations


class GetoptError(Exception):
    """Carries glibc's message, e.g. ``read: invalid option -- 'x'``."""


class Parsed:
    """Options and operands of one command line (a plain class: dataclasses cost start-up)."""

    __slots__ = ("args", "opts")

    def __init__(self, opts: list[tuple[str, str]] | None = None,
                 args: list[str] | None = None) -> None:
        self.opts: list[tuple[str, str]] = [] if opts is None else opts
        self.args: list[str] = [] if args is None else args

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Parsed)
        return (self.opts, self.args) == (other.opts, other.args)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Parsed(opts={self.opts!r}, args={self.args!r})"

    def has(self, letter: str) -> bool:
        return any(o == letter for o, _ in self.opts)


#: optstring -> (letters, letters that take an argument); a command line is parsed per request,
#: so the optstring is analysed once.
_OPTSTRINGS: dict[str, tuple[frozenset[str], frozenset[str]]] = {}


def _analyse(optstring: str) -> tuple[frozenset[str], frozenset[str]]:
    takes_arg = frozenset(ch for i, ch in enumerate(optstring) if i + 1 < len(optstring)
                          and optstring[i + 1] == ":")
    letters = frozenset(optstring.replace(":", ""))
    _OPTSTRINGS[optstring] = letters, takes_arg
    return letters, takes_arg


def getopt(prog: str, argv: list[str], optstring: str) -> Parsed:
    """Parse ``argv`` (without the command name). Options may follow operands, as in glibc."""
    letters, takes_arg = _OPTSTRINGS.get(optstring) or _analyse(optstring)
    opts: list[tuple[str, str]] = []
    args: list[str] = []
    words = iter(argv)
    for arg in words:
        if arg[:1] != "-" or arg == "-":  # an operand ("-" alone is one too)
            args.append(arg)
        elif arg == "--":
            args.extend(words)
            break
        elif len(arg) == 2 and arg[1] not in takes_arg:  # the usual "-q"
            if arg[1] not in letters:
                raise GetoptError(f"{prog}: invalid option -- '{arg[1]}'")
            opts.append((arg[1], ""))
        else:
            for j in range(1, len(arg)):
                ch = arg[j]
                if ch not in letters:
                    raise GetoptError(f"{prog}: invalid option -- '{ch}'")
                if ch in takes_arg:
                    value = arg[j + 1:] or next(words, None)
                    if value is None:
                        raise GetoptError(f"{prog}: option requires an argument -- '{ch}'")
                    opts.append((ch, value))
                    break
                opts.append((ch, ""))
    return Parsed(opts, args)
