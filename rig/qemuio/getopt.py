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


def getopt(prog: str, argv: list[str], optstring: str) -> Parsed:
    """Parse ``argv`` (without the command name). Options may follow operands, as in glibc."""
    takes_arg = {ch for i, ch in enumerate(optstring) if i + 1 < len(optstring)
                 and optstring[i + 1] == ":"}
    letters = set(optstring.replace(":", ""))
    out = Parsed()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out.args.extend(argv[i + 1:])
            break
        if len(arg) > 1 and arg.startswith("-"):
            j = 1
            while j < len(arg):
                ch = arg[j]
                if ch not in letters:
                    raise GetoptError(f"{prog}: invalid option -- '{ch}'")
                if ch in takes_arg:
                    if j + 1 < len(arg):
                        out.opts.append((ch, arg[j + 1:]))
                    elif i + 1 < len(argv):
                        i += 1
                        out.opts.append((ch, argv[i]))
                    else:
                        raise GetoptError(f"{prog}: option requires an argument -- '{ch}'")
                    break
                out.opts.append((ch, ""))
                j += 1
        else:
            out.args.append(arg)
        i += 1
    return out
