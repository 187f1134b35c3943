"""qemu-io's command line, parsed as qemu-io 7.2 parses it: glibc's ``getopt_long`` (operands and
options in any order, ``--opt=value`` or ``--opt value``, unambiguous prefixes of long options)
with its messages, then qemu-io's usage on standard output and exit status 1.

The rig adds a few options of its own (``-o``, ``--loop``, ``--allow``...); qemu-io's are all here,
with the same letters. Messages that qemu-io prefixes with its program name use :func:`prog_name`:
``rig io``, or ``$RIG_IO_NAME`` (``RIG_IO_NAME=qemu-io`` makes golden files of qemu-io match).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:
    from typing import Any

#: qemu-io's own short options, plus the rig's ``-o`` (extra node options).
SHORT = "hVc:d:f:rsnCmki:t:T:Uo:"
#: long name -> (key, takes an argument). The key is the short letter where there is one.
LONG: dict[str, tuple[str, bool]] = {
    "help": ("h", False), "version": ("V", False), "cmd": ("c", True), "format": ("f", True),
    "read-only": ("r", False), "snapshot": ("s", False), "nocache": ("n", False),
    "copy-on-read": ("C", False), "misalign": ("m", False), "native-aio": ("k", False),
    "aio": ("i", True), "discard": ("d", True), "cache": ("t", True), "trace": ("T", True),
    "object": ("object", True), "image-opts": ("image-opts", False),
    "force-share": ("U", False),
    # the rig's own
    "options": ("o", True), "loop": ("loop", True), "loop-block-size": ("loop-block-size", True),
    "loop-direct-io": ("loop-direct-io", False), "allow": ("allow", True),
    "verbose-errors": ("verbose-errors", False),
}

USAGE = """\
Usage: {name} [OPTIONS]... [-c STRING]... [file]
QEMU Disk exerciser

  --object OBJECTDEF   define an object such as 'secret' for
                       passwords and/or encryption keys
  --image-opts         treat file as option string
  -c, --cmd STRING     execute command with its arguments
                       from the given string
  -f, --format FMT     specifies the block driver to use
  -r, --read-only      export read-only
  -s, --snapshot       use snapshot file
  -n, --nocache        disable host cache, short for -t none
  -C, --copy-on-read   enable copy-on-read
  -m, --misalign       misalign allocations for O_DIRECT
  -k, --native-aio     use kernel AIO implementation
                       (Linux only, prefer use of -i)
  -i, --aio=MODE       use AIO mode (threads, native or io_uring)
  -t, --cache=MODE     use the given cache mode for the image
  -d, --discard=MODE   use the given discard mode for the image
  -T, --trace PATTERN  accepted; the rig has no trace points
  -U, --force-share    force shared permissions
  -h, --help           display this help and exit
  -V, --version        output version information and exit

The rig's own:
  -o, --options K=V,...  extra node options (--image-opts syntax)
  --loop SIZE            run on a fresh loop device of SIZE (removed afterwards)
  --loop-block-size N    its logical block size: 512 (default), 1024, 2048, 4096
  --loop-direct-io       the loop device does direct I/O
  --allow DEV            allow writing to this block device (path, serial:S or wwn:W)
  --verbose-errors       an unknown driver's message lists the drivers the rig has
  RIG_IO_NAME=NAME       the program name in messages (default 'rig io'; 'qemu-io' for
                         qemu-iotests' golden files)

See '{name} -c help' for information on available commands.
"""


def prog_name() -> str:
    return os.environ.get("RIG_IO_NAME") or "rig io"


class UsageError(Exception):
    """A getopt complaint (glibc's words); qemu-io then prints its usage and exits 1."""


class Args:
    """The parsed command line; keyword arguments override the defaults. A plain class, not a
    dataclass: the dataclasses module costs ``rig io`` start-up (issue 19)."""

    def __init__(self, **given: Any) -> None:
        self.image: str | None = None
        self.cmd: list[str] = []
        self.fmt: str | None = None
        self.read_only: bool = False
        self.snapshot: bool = False
        self.nocache: bool = False
        self.copy_on_read: bool = False
        self.misalign: bool = False
        self.native_aio: bool = False
        self.aio: str = "threads"
        self.discard: str = "unmap"
        self.cache: str | None = None
        self.force_share: bool = False
        self.image_opts: bool = False
        self.object: list[str] = []
        self.options: list[str] = []
        self.loop: str | None = None
        self.loop_block_size: int = 512
        self.loop_direct_io: bool = False
        self.allow: list[str] = []
        self.verbose_errors: bool = False
        self.help: bool = False
        self.version: bool = False
        for key, value in given.items():
            if key not in self.__dict__:
                raise TypeError(f"Args() got an unexpected keyword argument {key!r}")
            setattr(self, key, value)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "Args(" + ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items()) + ")"


def _long(argv0: str, word: str, rest: list[str]) -> tuple[str, str | None]:
    """``--name[=value]`` -> (key, value), taking the value from ``rest`` when needed."""
    name, eq, value = word[2:].partition("=")
    if name in LONG:
        matches = [name]
    else:
        matches = [n for n in LONG if n.startswith(name)]
        keys = {LONG[n] for n in matches}
        if len(keys) > 1:
            options = " ".join(f"'--{n}'" for n in matches)
            raise UsageError(f"{argv0}: option '--{name}' is ambiguous; possibilities: "
                             f"{options}")
    if not matches:
        raise UsageError(f"{argv0}: unrecognized option '--{name}'")
    full = matches[0]
    key, takes = LONG[full]
    if not takes:
        if eq:
            raise UsageError(f"{argv0}: option '--{full}' doesn't allow an argument")
        return key, None
    if not eq:
        if not rest:
            raise UsageError(f"{argv0}: option '--{full}' requires an argument")
        value = rest.pop(0)
    return key, value


_FLAGS = {"r": "read_only", "s": "snapshot", "n": "nocache", "C": "copy_on_read",
          "m": "misalign", "k": "native_aio", "U": "force_share", "h": "help", "V": "version",
          "image-opts": "image_opts", "loop-direct-io": "loop_direct_io",
          "verbose-errors": "verbose_errors"}
_CACHE_MODES = ("none", "off", "writeback", "writethrough", "directsync", "unsafe")


class BadValue(Exception):
    """An option's value qemu-io refuses (``Invalid cache option: x``): exit 1, no usage."""


def _apply(args: Args, key: str, value: str | None) -> None:
    """One option, as qemu-io's loop handles it (in order: the first bad one is reported)."""
    if key in _FLAGS:
        setattr(args, _FLAGS[key], True)
        if key == "n":
            args.cache = "none"
        return
    assert value is not None
    if key == "c":
        args.cmd.append(value)
    elif key == "f":
        args.fmt = value
    elif key == "t":
        if value not in _CACHE_MODES:
            raise BadValue(f"Invalid cache option: {value}")
        args.cache = value
    elif key == "d":
        if value not in ("ignore", "off", "unmap", "on"):
            raise BadValue(f"Invalid discard option: {value}")
        args.discard = value
    elif key == "i":
        if value not in ("threads", "native", "io_uring"):
            raise BadValue(f"Invalid aio option: {value}")
        args.aio = value
    elif key == "object":
        args.object.append(value)
    elif key == "o":
        args.options.append(value)
    elif key == "loop":
        args.loop = value
    elif key == "loop-block-size":
        if value not in ("512", "1024", "2048", "4096"):
            raise BadValue(f"--loop-block-size: {value!r} is not one of 512, 1024, 2048, 4096")
        args.loop_block_size = int(value)
    elif key == "allow":
        args.allow.append(value)
    # "T": tracing is accepted and ignored: the rig has no trace points


def _stops(args: Args) -> bool:
    """-h or -V was seen: qemu-io acts on it there, the rest is not parsed."""
    return bool(args.help or args.version)


def parse(argv: list[str], argv0: str | None = None) -> Args:
    """Parse ``argv`` (without the program name) into :class:`Args`.

    Raises :class:`UsageError` for a getopt complaint or more than one operand (the message is
    empty then), :class:`BadValue` for a refused value. ``-h`` and ``-V`` stop the parse where
    they stand, as qemu-io exits there."""
    argv0 = argv0 or prog_name()
    takes = {ch for i, ch in enumerate(SHORT) if SHORT[i + 1:i + 2] == ":"}
    letters = set(SHORT.replace(":", ""))
    args = Args()
    operands: list[str] = []
    rest = list(argv)
    while rest and not _stops(args):
        word = rest.pop(0)
        if word == "--":
            operands += rest
            break
        if word.startswith("--"):
            _apply(args, *_long(argv0, word, rest))
        elif word.startswith("-") and word != "-":
            for j in range(1, len(word)):
                ch = word[j]
                if ch not in letters:
                    raise UsageError(f"{argv0}: invalid option -- '{ch}'")
                if ch in takes:
                    value = word[j + 1:]
                    if not value:
                        if not rest:
                            raise UsageError(f"{argv0}: option requires an argument -- '{ch}'")
                        value = rest.pop(0)
                    _apply(args, ch, value)
                    break
                _apply(args, ch, None)
                if _stops(args):
                    break
        else:
            operands.append(word)
    if args.help or args.version:
        return args
    if len(operands) > 1:
        raise UsageError("")
    args.image = operands[0] if operands else None
    return args
