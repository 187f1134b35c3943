"""QMP input framing: bytes from a socket, cut into one JSON text per message.

QEMU reads QMP input with a streaming JSON lexer, not line by line: a message may span lines and
several may share one. This splitter does the same with a small state machine over the bytes
(strings, escapes, bracket depth), so a message is complete when its outermost ``{...}`` (or
``[...]``) closes. A scalar at the top level (``nonsense``, ``42``) ends at the next newline.

What it refuses, each as one :class:`Garbage` item in the output (the caller answers it with a
QMP ``GenericError`` and goes on reading):

* a message longer than ``max_bytes`` (QEMU allows 64 MiB; a test rig needs far less): the rest
  of it is skipped without being kept, so a huge line costs no memory;
* nesting deeper than ``max_depth`` (QEMU's limit is 1024), skipped the same way;
* a closing bracket with nothing open, or a byte that can appear nowhere in JSON outside a
  string (a control character, ``@``, invalid UTF-8 lead byte, ...) inside a message: reported
  at once, and the splitter starts afresh after the next newline.

Feeding the same bytes in any chunks gives the same items (a property test checks this).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_BYTES = 1 << 20
MAX_DEPTH = 1024
_OPEN = frozenset(b"{[")
_CLOSE = frozenset(b"}]")
_SPACE = frozenset(b" \t\r\n")
#: Bytes that may appear outside strings in a JSON text (structure, numbers, literals).
_TOKEN = frozenset(b"{}[]:,+-.0123456789eEtrufalsn \t\r\n")


@dataclass(frozen=True)
class Garbage:
    """Input that is no JSON message; ``reason`` completes "JSON parse error, ..."."""

    reason: str


Item = bytes | Garbage


class Splitter:
    """Feed bytes with :meth:`feed`; it returns the messages (bytes) and the refusals
    (:class:`Garbage`) completed so far, in order."""

    def __init__(self, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> None:
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self._buf = bytearray()
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._scalar = False   # a top-level non-bracket text, ended by a newline
        self._skipping = False  # discarding the rest of a refused message
        self._to_newline = False  # discarding up to the next newline (after a bad byte)
        self._size = 0

    @property
    def pending(self) -> int:
        """Bytes held for an unfinished message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Item]:
        out: list[Item] = []
        for byte in data:
            self._step(byte, out)
        return out

    def _reset(self) -> None:
        self._buf.clear()
        self._depth = 0
        self._in_string = self._escape = self._scalar = self._skipping = False
        self._size = 0

    def _refuse(self, out: list[Item], reason: str, *, to_newline: bool = False) -> None:
        out.append(Garbage(reason))
        self._reset()
        self._to_newline = to_newline

    def _step(self, byte: int, out: list[Item]) -> None:
        if self._to_newline:
            if byte == 0x0A:
                self._to_newline = False
            return
        if self._depth == 0 and not self._scalar:
            if byte in _SPACE:
                return
            if byte in _CLOSE:
                self._refuse(out, f"unexpected {chr(byte)!r} with nothing open",
                             to_newline=True)
                return
            if byte not in _OPEN:
                self._scalar = True
        self._size += 1
        if not self._skipping:
            self._buf.append(byte)
            if self._size > self.max_bytes:
                out.append(Garbage(f"message longer than {self.max_bytes} bytes"))
                self._buf.clear()
                self._skipping = True
        if self._scalar:
            if byte == 0x0A:
                if not self._skipping:
                    out.append(bytes(self._buf).strip())
                self._reset()
            return
        if self._in_string:
            if self._escape:
                self._escape = False
            elif byte == 0x5C:  # backslash
                self._escape = True
            elif byte == 0x22:
                self._in_string = False
            return
        if byte == 0x22:
            self._in_string = True
        elif byte in _OPEN:
            self._depth += 1
            if self._depth > self.max_depth and not self._skipping:
                out.append(Garbage(f"nesting deeper than {self.max_depth}"))
                self._buf.clear()
                self._skipping = True
        elif byte in _CLOSE:
            self._depth -= 1
            if self._depth == 0:
                if not self._skipping:
                    out.append(bytes(self._buf))
                self._reset()
        elif byte not in _TOKEN:
            self._refuse(out, f"invalid byte 0x{byte:02x} outside a string", to_newline=True)
