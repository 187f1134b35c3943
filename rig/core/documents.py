"""TOML and JSON documents read with bounds: the one way the rig parses a config document.

``tomllib`` and ``json`` recurse once per nesting level, so a rule list nested 1,000 deep ends in
a RecursionError, and a non-UTF-8 byte in a UnicodeDecodeError. Here each of those is a
:class:`~rig.errors.ConfigError` naming the source, and the nesting a document may have is capped
at :data:`MAX_DEPTH` levels (the rig's own formats need four).
"""

from __future__ import annotations

import os
import stat

from rig.errors import ConfigError

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:
    from typing import Any

#: Deepest nesting of tables/arrays/objects any rig document may have.
MAX_DEPTH = 32


def _depth_problem(data: Any) -> bool:
    """Whether ``data`` nests deeper than :data:`MAX_DEPTH` (iterative: never recurses)."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth >= MAX_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _bracket_depth(text: str) -> int:
    """An upper bound on the nesting of a JSON or TOML text, counted before parsing, so the
    recursive parsers never see a document that could exhaust the stack."""
    depth = best = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth = max(depth - 1, 0)
    return best


#: The largest config document or log the rig reads whole (a rule file, a blkdebug config, a
#: replay log, a lab inventory).
MAX_DOCUMENT = 64 << 20


class DocumentError(ConfigError):
    """A document could not be read; ``reason`` is the why alone (``No such file or
    directory``, ``not a regular file``), for front ends that word the message their own way."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_document(path: str | os.PathLike[str], what: str, *,
                  limit: int = MAX_DOCUMENT) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them. A device, a FIFO or
    a directory is refused before anything is read (``/dev/zero`` would never end, a FIFO
    would block), and every problem is one :class:`DocumentError` naming ``what``."""
    name = os.fspath(path)

    def cannot(reason: str) -> DocumentError:
        return DocumentError(f"cannot read the {what} {name!r}: {reason}", reason)

    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise cannot(e.strerror or str(e)) from None
    except ValueError:  # a NUL byte in the name
        raise cannot("a file name has no NUL byte") from None
    try:
        with os.fdopen(fd, "rb") as f:  # closes fd
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise cannot("not a regular file")
            if st.st_size > limit:
                raise DocumentError(f"the {what} {name!r} is {st.st_size} bytes; the most the "
                                    f"rig reads is {limit}", f"more than {limit} bytes")
            data = f.read(limit + 1)
    except OSError as e:
        raise cannot(e.strerror or str(e)) from None
    if len(data) > limit:
        raise DocumentError(f"the {what} {name!r} grew past {limit} bytes while it was read",
                            f"more than {limit} bytes")
    return data


def decode(raw: bytes, source: str) -> str:
    """UTF-8 text of ``raw``, or a ConfigError naming the source and the byte offset."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not UTF-8 text (byte {e.start})") from None


def _check_text(text: str, source: str) -> None:
    """Refuse a text that could nest too deeply before a recursive parser sees it."""
    if _bracket_depth(text) > MAX_DEPTH:
        raise ConfigError(f"{source}: nested more than {MAX_DEPTH} levels deep")


def _check(data: Any, source: str) -> Any:
    """Refuse parsed data nested too deeply (TOML nests by dotted keys too, without brackets)."""
    if _depth_problem(data):
        raise ConfigError(f"{source}: nested more than {MAX_DEPTH} levels deep")
    return data


def loads_json(text: str, source: str) -> Any:
    """Parse JSON text; a bad document is a one-line ConfigError naming ``source``."""
    _check_text(text, source)
    import json  # json and tomllib load when a document is read, not at every start-up

    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{source}: invalid JSON at line {e.lineno} column {e.colno}: "
                          f"{e.msg}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply") from None
    except ValueError as e:
        raise ConfigError(f"{source}: invalid JSON: {_why(e)}") from None
    return data  # every JSON level is a bracket: _check_text has bounded the nesting already


def _why(e: ValueError) -> str:
    """The parser's complaint on one short line (Python's int digit limit has a long one)."""
    text = " ".join(str(e).split())
    if "integer string conversion" in text:
        return "a number has too many digits"
    return text if len(text) <= 200 else text[:197] + "..."


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def loads_toml(text: str, source: str) -> Any:
    """Parse TOML text; a bad document is a one-line ConfigError naming ``source``."""
    _check_text(text, source)
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {_why(e)}") from None
    except ValueError as e:  # an integer past Python's digit limit
        raise ConfigError(f"{source}: invalid TOML: {_why(e)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply") from None
    return _check(data, source)
