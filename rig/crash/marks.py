"""User marks from a program under ``rig crash record``: a unix socket, and ``rig crash mark``.

While ``rig crash record`` runs a command, a :class:`MarkServer` listens on a unix stream socket
in a private directory (mode 0700, removed when the server closes or, if this process is killed,
by the watcher the caller's ``death_watch`` starts: ``rig.drivers.procs.DeathWatch``) and the
command gets its path in ``$RIG_CRASH_MARK`` (:func:`mark_env`). ``rig crash mark TEXT``
(``rig crash mark``, or :func:`send_mark` in Python) connects, sends the text, and returns once
the recorder has appended the mark: so the mark comes after every record of the I/O the program
saw complete before (``after fsync: row 5``) and before anything it does after.

The protocol, one request per line, any number of lines per connection:

* request: the mark's text in UTF-8, then ``\\n`` (at most :data:`MAX_LINE` bytes, not empty);
* reply: ``ok SEQ\\n`` (the mark's record number in the log) or ``error WHAT\\n``. After a line
  that is too long, or data without a newline at the end of the stream, the server replies
  ``error`` and closes that connection; a bad line never stops the server.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import socket
import sys
import tempfile
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from rig.errors import ConfigError, RigError

if TYPE_CHECKING:
    from rig.filters.recorder import RecorderFilter

__all__ = ["ENV", "MAX_LINE", "DeathWatchFactory", "MarkServer", "Watch", "mark_env",
           "send_mark"]

#: The environment variable holding the socket path inside a recorded command.
ENV = "RIG_CRASH_MARK"
#: The longest request line, without its newline.
MAX_LINE = 64 * 1024
#: Connections served at once; more are told so and closed.
MAX_CLIENTS = 256
_SOCKET_NAME = "mark.sock"
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path, less the terminating NUL


class Watch(Protocol):
    """A watcher that runs its script if this process dies before :meth:`release`."""

    def release(self) -> None: ...


class DeathWatchFactory(Protocol):
    """Starts a :class:`Watch` named ``name`` running ``sh -c script`` with ``args`` as
    ``$1``... (``rig.drivers.procs.DeathWatch``)."""

    def __call__(self, name: str, script: str, *args: str) -> Watch: ...


class _Client:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()


class MarkServer:
    """Appends a mark to ``recorder``'s log for each line a client sends (see the module doc).

    A context manager: entering creates the private directory and the socket and starts one
    thread serving every client (non-blocking, so a slow client delays no other); leaving stops
    it and removes the socket and the directory. ``marks`` counts the marks appended, ``errors``
    the error replies.
    """

    def __init__(self, recorder: RecorderFilter, death_watch: DeathWatchFactory) -> None:
        self.recorder = recorder
        self._death_watch = death_watch
        self.marks = 0
        self.errors = 0
        self._dir: str | None = None
        self._watch: Watch | None = None
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1
        self._clients: dict[int, _Client] = {}

    @property
    def path(self) -> str:
        """The socket's path (the server must be started)."""
        if self._dir is None:
            raise RigError("the mark server is not running")
        return os.path.join(self._dir, _SOCKET_NAME)

    def start(self) -> MarkServer:
        if self._dir is not None:
            raise RigError("the mark server is already running")
        self._dir = _private_dir()
        try:
            self._watch = self._death_watch("rig-mark-reaper", 'rm -rf "$1"', self._dir)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener = listener
            listener.bind(self.path)
            listener.listen(64)
            listener.setblocking(False)
            self._wake_r, self._wake_w = os.pipe()
            self._thread = threading.Thread(target=self._serve, name="rig-crash-marks",
                                            daemon=True)
            self._thread.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop serving and remove the socket and its directory (again: nothing)."""
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join()
            self._thread = None
        for client in self._clients.values():
            client.sock.close()
        self._clients.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        if self._watch is not None:
            self._watch.release()
            self._watch = None

    def __enter__(self) -> MarkServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------ the serving thread
    def _serve(self) -> None:
        assert self._listener is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._wake_r, selectors.EVENT_READ)
            sel.register(self._listener, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fd == self._wake_r:
                        return
                    if key.fileobj is self._listener:
                        self._accept(sel)
                        continue
                    client = self._clients[key.fd]
                    try:
                        self._readable(sel, client)
                    except Exception:  # a bug here must not stop the marks of others
                        self.errors += 1
                        if key.fd in self._clients:
                            self._drop(sel, client)

    def _accept(self, sel: selectors.BaseSelector) -> None:
        assert self._listener is not None
        try:
            sock, _ = self._listener.accept()
        except OSError:  # the client went away already, or out of descriptors
            return
        if len(self._clients) >= MAX_CLIENTS:
            with contextlib.suppress(OSError):
                sock.send(b"error too many connections\n", socket.MSG_NOSIGNAL)
            sock.close()
            self.errors += 1
            return
        sock.setblocking(False)
        self._clients[sock.fileno()] = _Client(sock)
        sel.register(sock, selectors.EVENT_READ)

    def _drop(self, sel: selectors.BaseSelector, client: _Client) -> None:
        sel.unregister(client.sock)
        del self._clients[client.sock.fileno()]
        client.sock.close()

    def _readable(self, sel: selectors.BaseSelector, client: _Client) -> None:
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self._drop(sel, client)
            return
        if not data:
            if client.buffer:
                self._reply(client, self._error("incomplete request: no newline at the end"))
            self._drop(sel, client)
            return
        client.buffer += data
        while True:
            line, sep, rest = client.buffer.partition(b"\n")
            if not sep:
                break
            client.buffer = bytearray(rest)
            if not self._reply(client, self._answer(bytes(line))) or len(line) > MAX_LINE:
                self._drop(sel, client)
                return
        if len(client.buffer) > MAX_LINE:
            self._reply(client, self._answer(bytes(client.buffer)))
            self._drop(sel, client)

    def _answer(self, line: bytes) -> str:
        """The reply to one request line (without its newline)."""
        if len(line) > MAX_LINE:
            return self._error(f"mark longer than {MAX_LINE} bytes")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            return self._error(f"mark is not UTF-8 (byte {e.start})")
        if not text:
            return self._error("empty mark")
        try:
            seq = self.recorder.mark(text)
        except Exception as e:  # the log is closed, the disk full ...: the client is told
            return self._error(f"cannot append the mark: {e}")
        self.marks += 1
        return f"ok {seq}"

    def _error(self, what: str) -> str:
        self.errors += 1
        return f"error {what}"

    def _reply(self, client: _Client, reply: str) -> bool:
        """Send ``reply``; False when the client cannot take it (gone, or not reading)."""
        try:
            client.sock.sendall((reply + "\n").encode("utf-8"), socket.MSG_NOSIGNAL)
        except OSError:
            return False
        return True


def _private_dir() -> str:
    """A new directory of mode 0700 whose socket path fits in ``sun_path``."""
    path = tempfile.mkdtemp(prefix="rig-mark-")
    if len(os.path.join(path, _SOCKET_NAME)) <= _SUN_PATH_MAX:
        return path
    os.rmdir(path)
    return tempfile.mkdtemp(prefix="rig-mark-", dir="/tmp")


def mark_env(server: MarkServer) -> dict[str, str]:
    """What to add to the recorded command's environment: ``$RIG_CRASH_MARK``, and ``PATH``
    with this Python's directory first, so that ``rig`` is found inside the command."""
    bindir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    return {ENV: server.path, "PATH": bindir + os.pathsep + path if path else bindir}


def send_mark(text: str, path: str | None = None, *, timeout: float = 60.0) -> int:
    """Ask the recorder to append the mark ``text``; its sequence number in the log.

    ``path`` is the server's socket, by default ``$RIG_CRASH_MARK``. A ConfigError says the
    input is wrong (not under ``rig crash record``, not one line of UTF-8); a RigError that the
    socket is gone or the text was refused.
    """
    if path is None:
        path = os.environ.get(ENV)
        if not path:
            raise ConfigError(f"${ENV} is not set: marks can be sent only from a command run by "
                           "'rig crash record'")
    if "\n" in text:
        raise ConfigError("a mark is one line: the text has a newline")
    try:
        payload = text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        raise ConfigError("the mark is not valid UTF-8 text") from None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(payload, socket.MSG_NOSIGNAL)
            reply = _read_line(sock)
    except TimeoutError:
        raise RigError(f"no answer from the mark socket {path} in {timeout:g} s") from None
    except OSError as e:
        raise RigError(f"cannot reach the mark socket {path}: {e.strerror or e} (has 'rig crash "
                       "record' ended?)") from None
    if not reply:
        raise RigError(f"the mark socket {path} closed without an answer (has 'rig crash "
                       "record' ended?)")
    verb, _, rest = reply.partition(" ")
    if verb == "ok" and rest.isdigit():
        return int(rest)
    if verb == "error":
        raise RigError(f"mark refused: {rest}")
    raise RigError(f"unexpected answer from the mark socket {path}: {reply[:80]!r}")


def _read_line(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n") and len(data) <= 4096:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace").rstrip("\n")
