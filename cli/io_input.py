"""``rig io``'s commands from standard input, each after qemu-io's prompt.

qemu-io writes ``qemu-io> `` and flushes standard output before it reads each command, so that
whoever drives it sees the prompt before it answers, and so that, on a pipe, the prompt comes
before anything the command then writes to standard error (qemu-iotests' reference outputs hold
that order). A flush is a ``write(2)`` per command: for a script of ``read -q`` lines that print
nothing it is a good part of each command's cost (issue 19's 4 KiB queue-depth-1 benchmark).

So when standard input is not a terminal, the commands are read in large blocks, and a prompt
is written out only when somebody could tell: before the next write of the command to either
stream (then it is flushed, with whatever came before it, exactly as qemu-io would have by then),
before waiting for more input (whoever drives it may be waiting for the prompt), and at the end.
The merged output is byte for byte qemu-io's; only prompts of commands that printed nothing go
out later, together. As in qemu-io, only a newline ends a command (a carriage return is part of
it). On a terminal, or with a standard input that has no file descriptor
(in-process callers), each prompt is flushed at once, as before.
"""

from __future__ import annotations

import codecs
import os
import sys
from collections.abc import Iterator
from types import TracebackType
from typing import Any, TextIO, cast

from rig.qemuio.session import Session

#: qemu-io prints this before reading each command from standard input, terminal or not; it is
#: part of the output that qemu-iotests golden files hold, so the rig prints it verbatim.
PROMPT = "qemu-io> "
#: How much standard input is read at once.
_CHUNK = 1 << 16


class _Gate:
    """One of the session's streams: writes out the prompts owed before anything else."""

    def __init__(self, stream: TextIO, owed: _Owed) -> None:
        self._stream = stream
        self._owed = owed

    def write(self, s: str) -> int:
        if self._owed.count:
            self._owed.pay()
        return self._stream.write(s)

    def flush(self) -> None:
        if self._owed.count:
            self._owed.pay()
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Owed:
    """Prompts written (as far as the commands know) but not yet out."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.count = 0

    def pay(self) -> None:
        count, self.count = self.count, 0
        if count:
            self.out.write(PROMPT * count)
        self.out.flush()


class StdinCommands:
    """``with StdinCommands(session) as lines: for line in lines: ...``"""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._saved: tuple[TextIO, TextIO] | None = None
        self._owed = _Owed(session.out)
        try:
            self._fd = sys.stdin.fileno()
            deferred = not os.isatty(self._fd)
        except (AttributeError, OSError, ValueError):
            self._fd, deferred = -1, False
        self._deferred = deferred

    def __enter__(self) -> Iterator[str]:
        if not self._deferred:
            return self._prompt_each()
        s = self._session
        self._saved = (s.out, s.err)
        s.out = cast(TextIO, _Gate(s.out, self._owed))
        s.err = cast(TextIO, _Gate(s.err, self._owed))
        return self._prompt_when_seen()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._saved is not None:
            self._session.out, self._session.err = self._saved
            self._saved = None
            self._owed.pay()

    def _prompt_each(self) -> Iterator[str]:
        out = self._session.out
        while True:
            out.write(PROMPT)
            out.flush()
            line = sys.stdin.readline()
            if not line:
                return
            yield line.rstrip("\n")

    def _prompt_when_seen(self) -> Iterator[str]:
        # In stdin's encoding, and only "\n" ends a line, as in qemu-io (fgets): a "\r" stays
        # in the command. Bytes that are not text become U+FFFD: a garbage line is a command
        # not found, not a traceback.
        decoder = codecs.getincrementaldecoder(sys.stdin.encoding or "utf-8")("replace")
        owed = self._owed
        fd = self._fd
        rest = ""
        while True:
            owed.count += 1
            lines = None
            while lines is None:
                owed.pay()  # about to wait for input: the prompt must be out
                chunk = os.read(fd, _CHUNK)
                text = rest + decoder.decode(chunk, final=not chunk)
                if not chunk:
                    if text:
                        yield text
                        owed.count += 1
                    return
                *complete, rest = text.split("\n")
                if complete:
                    lines = complete
            yield lines[0]
            for line in lines[1:]:
                owed.count += 1
                yield line
