"""The QMP server: a unix socket, any number of clients, each read by its own thread.

Each client gets the greeting, then its messages are framed (:mod:`rig.qmp.framing`), answered
by the :class:`~rig.qmp.dispatcher.Dispatcher` in the order they came, and written by a writer
thread of its own, which also carries the events :meth:`QmpServer.broadcast` hands it. So a
client that stops reading holds up neither the others nor the I/O path that emits events (the
request thread only queues them). Nothing a client sends (garbage, huge lines, a disconnect in
the middle of a message) ends anything but, at most, that client's connection.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import select
import socket
import stat
import threading
from typing import Any

from rig.errors import ConfigError
from rig.qmp.dispatcher import Dispatcher, Session
from rig.qmp.framing import Splitter
from rig.qmp.protocol import encode, greeting

#: Clients at once; one more is told so and closed.
MAX_CLIENTS = 32
#: Replies a client may have unsent before the server stops reading its commands (as QEMU
#: suspends a monitor whose output backs up).
MAX_UNSENT_REPLIES = 64
#: Messages a client may have unsent at all: one that reads nothing while events keep coming
#: is disconnected instead of growing the server's memory.
MAX_UNSENT = 10000
_RECV = 65536


class _Client:
    def __init__(self, server: QmpServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.session = Session()
        self.out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.closed = False
        self.reader = threading.Thread(target=self._read, name="rig-qmp-client", daemon=True)
        self.writer = threading.Thread(target=self._write, name="rig-qmp-writer", daemon=True)

    def start(self) -> None:
        self.out.put(encode(greeting(self.server.package)))
        self.writer.start()
        self.reader.start()

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        if self.out.qsize() >= MAX_UNSENT:
            self.close()  # it reads nothing: it would grow our memory for ever
            return
        self.out.put(data)

    def _read(self) -> None:
        splitter = Splitter()
        dispatcher = self.server.dispatcher
        try:
            while True:
                while self.out.qsize() > MAX_UNSENT_REPLIES and not self.closed:
                    self.server.wait_a_little()
                data = self.sock.recv(_RECV)
                if not data:
                    break
                for item in splitter.feed(data):
                    self.send(encode(dispatcher.handle(item, self.session)))
        except OSError:
            pass
        finally:
            self.close()

    def _write(self) -> None:
        try:
            while (data := self.out.get()) is not None:
                self.sock.sendall(data, socket.MSG_NOSIGNAL)  # a gone client is an error here
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.out.put(None)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.server._forget(self)


class QmpServer:
    """Serves ``dispatcher`` on the unix socket ``path`` from :meth:`start` to :meth:`close`."""

    def __init__(self, path: str, dispatcher: Dispatcher, package: str = "blockrig") -> None:
        self.path = path
        self.dispatcher = dispatcher
        self.package = package
        self._clients: list[_Client] = []
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Bind and listen (a :class:`ConfigError` naming the path if it cannot), then accept
        clients in a thread."""
        _clear_stale(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(self.path)
            os.chmod(self.path, 0o600)
            sock.listen(8)
        except OSError as e:
            sock.close()
            raise ConfigError(f"--qmp: {self.path}: cannot listen there: "
                              f"{e.strerror or e}") from None
        self._sock = sock
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._accept, name="rig-qmp", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting, disconnect every client, remove the socket file."""
        if self._closed or self._sock is None:
            return
        self._closed = True
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.close()
        for client in clients:
            client.writer.join(timeout=2)
        self._sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> QmpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ clients
    def _accept(self) -> None:
        assert self._sock is not None
        while True:
            ready, _, _ = select.select([self._sock.fileno(), self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            conn.setblocking(True)
            with self._lock:
                full = len(self._clients) >= MAX_CLIENTS
                client = _Client(self, conn)
                if not full:
                    self._clients.append(client)
            if full:
                with contextlib.suppress(OSError):
                    conn.sendall(encode({"error": {
                        "class": "GenericError",
                        "desc": f"too many QMP clients (at most {MAX_CLIENTS})"}}),
                        socket.MSG_NOSIGNAL)
                conn.close()
                continue
            client.start()

    def _forget(self, client: _Client) -> None:
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)
        with contextlib.suppress(OSError):
            client.sock.close()

    def wait_a_little(self) -> None:
        """A reader's pause while its client's replies back up."""
        select.select([self._wake_r], [], [], 0.01)

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    def broadcast(self, message: dict[str, Any], family: str | None = None) -> None:
        """Queue an event for every client that has negotiated (and, for an optional
        ``family`` of events, asked for it)."""
        data = encode(message)
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            session = client.session
            if session.negotiated and (family is None or family in session.watching):
                client.send(data)


def _clear_stale(path: str) -> None:
    """Refuse a path that holds anything but a dead socket; remove a dead socket (left by a
    killed process), as nothing answers on it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ConfigError(f"--qmp: {path}: {e.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"--qmp: {path} exists and is not a socket; give a new path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.connect(path)
    except OSError as e:
        if e.errno != errno.ECONNREFUSED:
            raise ConfigError(f"--qmp: {path}: {e.strerror}") from None
        os.unlink(path)
        return
    finally:
        probe.close()
    raise ConfigError(f"--qmp: {path} is in use by another server; give a new path")
