"""GNU getopt as qemu-io's commands use it: permuted operands, glibc's error wording."""

from __future__ import annotations

from dataclasses import dataclass, field


class GetoptError(Exception):
    """Carries glibc's message, e.g. ``read: invalid option -- 'x'``."""


@dataclass
class Parsed:
    opts: list[tuple[str, str]] = field(default_factory=list)
    args: list[str] = field(default_factory=list)

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
    out = Parsed()
    opts = out.opts
    i = 0
    n = len(argv)
    while i < n:
        arg = argv[i]
        if arg[:1] != "-" or len(arg) == 1:  # an operand ("-" alone is one too)
            out.args.append(arg)
            i += 1
            continue
        if arg == "--":
            out.args.extend(argv[i + 1:])
            break
        j = 1
        while j < len(arg):
            ch = arg[j]
            if ch not in letters:
                raise GetoptError(f"{prog}: invalid option -- '{ch}'")
            if ch in takes_arg:
                if j + 1 < len(arg):
                    opts.append((ch, arg[j + 1:]))
                elif i + 1 < n:
                    i += 1
                    opts.append((ch, argv[i]))
                else:
                    raise GetoptError(f"{prog}: option requires an argument -- '{ch}'")
                break
            opts.append((ch, ""))
            j += 1
        i += 1
    return out
