"""Marks sent to a recorder over its unix socket (``rig crash mark``): each lands in the log after
the I/O its sender saw complete, from threads and from processes; bad clients get an error and
never stop the server; the client's errors; the socket's private directory.

For the end-to-end test through ``rig crash record``, :func:`marking_writer` is a command that
writes and fsyncs one block at a time and marks each, and :func:`check_marked_rows` checks the
log it leaves.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import rig
from rig.cli.main import main
from rig.core.backend import BlockBackend
from rig.crash import marks
from rig.crash.logfile import WriteLog, read_log
from rig.crash.marks import (
    ENV,
    MAX_LINE,
    MarkServer,
    mark_env,
    send_mark,
)
from rig.crash.records import Kind, Record
from rig.crash.states import CrashStates
from rig.drivers.procs import DeathWatch
from rig.errors import RigError
from rig.filters.recorder import RecorderFilter

SIZE = 256 * 1024

# ------------------------------------------------------------------------ for the lead's e2e test
_WRITER = """\
import os, subprocess, sys
n, block = int(sys.argv[1]), int(sys.argv[2])
fd = os.open(os.environ["RIG_DEV"], os.O_WRONLY)
for i in range(n):
    os.pwrite(fd, bytes([i + 1]) * block, i * block)
    os.fsync(fd)
    subprocess.run(["rig", "crash", "mark", f"row {i}"], check=True)
os.close(fd)
"""


def marking_writer(n: int = 4, block: int = 4096) -> list[str]:
    """A command for ``rig crash record --size`` (at least ``n * block``) ``-- CMD``: for each
    ``i < n`` it writes block ``i`` (bytes ``i + 1``) to ``$RIG_DEV``, fsyncs, then runs ``rig
    crash mark "row i"``. :func:`check_marked_rows` checks the log."""
    return [sys.executable, "-c", _WRITER, str(n), str(block)]


def user_marks(log: WriteLog) -> list[Record]:
    return [r for r in log.records if r.kind is Kind.MARK and not r.system]


def check_marked_rows(log: WriteLog, n: int = 4, block: int = 4096) -> None:
    """The marks are ``row 0`` .. ``row n-1`` in order, and at each the rows up to it are
    durable (a crash right after the mark keeps them) while later rows are not written yet."""
    found = user_marks(log)
    assert [m.text for m in found] == [f"row {i}" for i in range(n)], [m.text for m in found]
    states = CrashStates(log)
    for i, mark in enumerate(found):
        durable = states.durable_image(mark.seq)
        for j in range(n):
            want = bytes([j + 1]) * block if j <= i else bytes(block)
            same = durable[j * block:(j + 1) * block] == want  # (no slow diff of the bytes)
            assert same, f"block {j} at mark {mark.text!r} (record {mark.seq})"


# ------------------------------------------------------------------------ fixtures
@pytest.fixture
def blk(tmp_path: Path) -> Iterator[BlockBackend]:
    with rig.open({"driver": "recorder", "log": str(tmp_path / "m.wlog"),
                   "file": {"driver": "memory", "size": SIZE}}) as b:
        yield b


def recorder_of(blk: BlockBackend) -> RecorderFilter:
    node = blk.root
    assert isinstance(node, RecorderFilter)
    return node


@pytest.fixture
def server(blk: BlockBackend) -> Iterator[MarkServer]:
    with MarkServer(recorder_of(blk), DeathWatch) as s:
        yield s


def finished_log(blk: BlockBackend) -> WriteLog:
    path = recorder_of(blk).log_path
    blk.close()
    return read_log(path)


def raw(server: MarkServer) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(server.path)
    return sock


def replies(sock: socket.socket) -> list[str]:
    """Every reply line until the server closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data.decode().splitlines()


def ask(sock: socket.socket, line: bytes, answers: int = 1) -> str:
    """Send ``line``, return the next ``answers`` reply lines (joined by newlines)."""
    sock.sendall(line)
    data = b""
    while data.count(b"\n") < answers:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data.decode().rstrip("\n")


# ------------------------------------------------------------------------ marks in order
def test_a_mark_lands_after_the_io_before_it(blk: BlockBackend, server: MarkServer) -> None:
    blk.pwrite(0, b"a" * 4096)
    first = send_mark("after the first write", server.path)
    blk.pwrite(4096, b"b" * 4096)
    blk.flush()
    second = send_mark("committed: ünïcode ✓", server.path)
    blk.pwrite(0, b"c" * 512)
    log = finished_log(blk)
    kinds = [(r.kind, r.text) for r in log.records]
    assert kinds == [(Kind.WRITE, ""), (Kind.MARK, "after the first write"), (Kind.WRITE, ""),
                     (Kind.FLUSH, ""), (Kind.MARK, "committed: ünïcode ✓"), (Kind.WRITE, "")]
    assert (first, second) == (2, 5) and server.marks == 2 and server.errors == 0
    assert log.mark_seq("committed: ünïcode ✓") == 5


def test_marks_from_many_threads_each_follow_that_threads_write(
        blk: BlockBackend, server: MarkServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, server.path)  # half of them find the socket through the variable
    threads, rounds = 8, 12
    acked: dict[str, int] = {}
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for k in range(rounds):
                blk.pwrite((t * rounds + k) * 512, bytes([t + 1]) * 512)
                text = f"thread {t} round {k}"
                acked[text] = send_mark(text, None if k % 2 else server.path)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert not errors, errors
    log = finished_log(blk)
    by_seq = {r.seq: r for r in log.records}
    assert {by_seq[seq].text: seq for seq in acked.values()} == acked
    writes = {r.offset: r.seq for r in log.records if r.kind is Kind.WRITE}
    for t in range(threads):
        last = 0
        for k in range(rounds):
            write, mark = writes[(t * rounds + k) * 512], acked[f"thread {t} round {k}"]
            assert last < write < mark, f"thread {t} round {k}: {last}, {write}, {mark}"
            last = mark
    assert len(log.records) == 2 * threads * rounds == server.marks * 2


CLI = ("import sys\n"
       "from rig.cli.main import main\n"
       "sys.exit(main(['crash', 'mark', *sys.argv[1:]]))\n")


def mark_process(server: MarkServer, *words: str) -> subprocess.Popen[str]:
    """``rig crash mark`` in a new process, with the environment a recorded command gets."""
    return subprocess.Popen([sys.executable, "-c", CLI, "--print-seq", *words],
                            env={**os.environ, **mark_env(server)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_marks_from_processes_are_ordered_with_the_parents_io(blk: BlockBackend,
                                                              server: MarkServer) -> None:
    seqs: list[int] = []
    for i in range(3):  # one after the other, between the parent's writes
        blk.pwrite(i * 4096, b"w" * 4096)
        proc = mark_process(server, "step", str(i))
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and err == ""
        seqs.append(int(out))
    procs = [mark_process(server, f"together {i}") for i in range(4)]  # at once
    together = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    log = finished_log(blk)
    texts = {r.seq: r.text for r in log.records if r.kind is Kind.MARK}
    assert [texts[s] for s in seqs] == ["step 0", "step 1", "step 2"]
    assert [r.kind for r in log.records[:6]] == [Kind.WRITE, Kind.MARK] * 3
    assert sorted(texts[int(out)] for out, _ in together) == [f"together {i}" for i in range(4)]


def test_rig_crash_mark_prints_nothing_or_the_seq_and_fails_in_one_line(
        server: MarkServer, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(ENV, server.path)
    assert main(["crash", "mark", "quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert main(["crash", "mark", "--print-seq", "two", "words"]) == 0
    assert capsys.readouterr().out == "2\n"
    monkeypatch.delenv(ENV)
    assert main(["crash", "mark", "x"]) == 2  # bad input: not under rig crash record
    out, err = capsys.readouterr()
    assert out == "" and err == (f"rig crash mark: ${ENV} is not set: marks can be sent only "
                                 "from a command run by 'rig crash record'\n")
    path = server.path
    assert main(["crash", "mark", "--socket", path, "y"]) == 0
    server.close()
    assert main(["crash", "mark", "--socket", path, "z"]) == 1  # a failure
    assert "cannot reach the mark socket" in capsys.readouterr().err


# ------------------------------------------------------------------------ bad input
def test_bad_clients_get_an_error_and_the_server_goes_on(blk: BlockBackend,
                                                         server: MarkServer) -> None:
    idle = raw(server)  # connected, says nothing: delays no one
    with raw(server) as sock:
        assert ask(sock, b"\xff\xfe not utf-8\n") == "error mark is not UTF-8 (byte 0)"
        assert ask(sock, b"\n") == "error empty mark"
        assert ask(sock, b"fine\nalso fine\n", 2) == "ok 1\nok 2"  # two in one send
    with raw(server) as sock:
        sock.sendall(b"x" * (MAX_LINE + 1) + b"\n")
        assert replies(sock) == [f"error mark longer than {MAX_LINE} bytes"]
    with raw(server) as sock:  # no newline, and more than a line can hold
        sock.sendall(b"y" * (MAX_LINE + 100))
        assert replies(sock) == [f"error mark longer than {MAX_LINE} bytes"]
    with raw(server) as sock:
        assert ask(sock, b"z" * MAX_LINE + b"\n") == "ok 3"  # the longest allowed
    with raw(server) as sock:
        sock.sendall(b"cut short")
        sock.shutdown(socket.SHUT_WR)
        assert replies(sock) == ["error incomplete request: no newline at the end"]
    raw(server).close()  # connects and leaves
    assert send_mark("still serving", server.path) == 4
    idle.close()
    assert (server.marks, server.errors) == (4, 5)
    assert [r.text for r in finished_log(blk).records] == [
        "fine", "also fine", "z" * MAX_LINE, "still serving"]


def test_too_many_clients_are_turned_away(server: MarkServer,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(marks, "MAX_CLIENTS", 2)
    held = [raw(server), raw(server)]
    assert ask(held[0], b"one\n") == "ok 1"  # both are being served
    with raw(server) as sock:
        assert replies(sock) == ["error too many connections"]
    held[1].close()
    assert ask(held[0], b"two\n") == "ok 2"  # the closed one is forgotten
    assert send_mark("three", server.path) == 3
    held[0].close()


def test_the_client_says_what_is_wrong(blk: BlockBackend, monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(RigError, match=rf"^\${ENV} is not set: .* 'rig crash record'$"):
        send_mark("x")
    with MarkServer(recorder_of(blk), DeathWatch) as server:
        path = server.path
        with pytest.raises(RigError, match="a mark is one line"):
            send_mark("two\nlines", path)
        with pytest.raises(RigError, match="not valid UTF-8"):
            send_mark("bad \udcff", path)
        with pytest.raises(RigError, match=r"^mark refused: empty mark$"):
            send_mark("", path)
        blk.close()
        with pytest.raises(RigError, match=r"mark refused: cannot append the mark: .* is closed"):
            send_mark("too late", path)
    monkeypatch.setenv(ENV, path)
    with pytest.raises(RigError, match=rf"cannot reach the mark socket {path}: No such file.*"
                                       "has 'rig crash record' ended"):
        send_mark("gone")
    quiet = tmp_path / "quiet.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(quiet))
        listener.listen(1)
        with pytest.raises(RigError, match=r"no answer from the mark socket .* in 0\.2 s"):
            send_mark("anyone?", str(quiet), timeout=0.2)


# ------------------------------------------------------------------------ the socket
def test_the_socket_is_private_and_removed(blk: BlockBackend) -> None:
    server = MarkServer(recorder_of(blk), DeathWatch)
    with pytest.raises(RigError, match="not running"):
        _ = server.path
    with server:
        home = os.path.dirname(server.path)
        assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
        assert stat.S_ISSOCK(os.stat(server.path).st_mode)
        with pytest.raises(RigError, match="already running"):
            server.start()
        env = mark_env(server)
        assert env[ENV] == server.path
        assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    assert not os.path.exists(home)
    server.close()  # again: nothing


def test_a_long_temp_dir_falls_back_to_tmp(blk: BlockBackend, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    with MarkServer(recorder_of(blk), DeathWatch) as server:
        assert server.path.startswith("/tmp/rig-mark-")
        assert send_mark("short enough", server.path) == 1
    assert list(deep.iterdir()) == []


# ------------------------------------------------------------------------ the e2e helpers
@pytest.mark.parametrize("flush", [True, False])
def test_check_marked_rows_accepts_fsynced_rows_only(blk: BlockBackend, server: MarkServer,
                                                     flush: bool) -> None:
    """What :func:`marking_writer` does, in process; without the fsync the check fails."""
    for i in range(3):
        blk.pwrite(i * 4096, bytes([i + 1]) * 4096)
        if flush:
            blk.flush()
        send_mark(f"row {i}", server.path)
    log = finished_log(blk)
    if flush:
        check_marked_rows(log, 3)
    else:
        with pytest.raises(AssertionError, match="block 0 at mark 'row 0'"):
            check_marked_rows(log, 3)
    assert marking_writer(3)[-2:] == ["3", "4096"]
