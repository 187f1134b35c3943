"""The QMP server on a real unix socket, over a RAM graph (no export needed): clients at once,
events to those that negotiated (and asked), misbehaving clients, the socket path's life, and
the block and ``x-rig-`` commands against what the backend really did."""

from __future__ import annotations

import errno
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rig
from rig.core.backend import BlockBackend
from rig.errors import ConfigError
from rig.qmp import serve
from rig.qmp.server import MAX_CLIENTS

qmp_legacy = pytest.importorskip("qemu.qmp.legacy")
KiB = 1024


class Raw:
    """A hand-driven client: lines in, JSON objects out."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.f = self.sock.makefile("rb")
        self.greeting = self.read()

    def read(self) -> dict[str, Any]:
        line = self.f.readline()
        assert line, "the server closed the connection"
        result: dict[str, Any] = json.loads(line)
        return result

    def ask(self, text: str | bytes) -> dict[str, Any]:
        self.sock.sendall(text.encode() if isinstance(text, str) else text)
        return self.read()

    def close(self) -> None:
        self.f.close()
        self.sock.close()


NEG = '{"execute": "qmp_capabilities"}\n'


@pytest.fixture
def blk() -> Iterator[BlockBackend]:
    with rig.open({"driver": "faults", "rules": [], "node-name": "f0",
                   "file": {"driver": "blkdebug", "node-name": "dbg",
                            "image": {"driver": "memory", "size": 1 << 20}}},
                  on_write_error="stop") as b:
        yield b


@pytest.fixture
def sock(tmp_path: Path, blk: BlockBackend) -> Iterator[Path]:
    path = tmp_path / "qmp.sock"
    with serve(str(path), blk, qdev="/dev/loop99"):
        yield path
    assert not path.exists()


def test_greeting_and_clients_at_once(sock: Path) -> None:
    clients = [Raw(sock) for _ in range(6)]
    assert clients[0].greeting == {"QMP": {"version": {"qemu": {"major": 7, "minor": 2,
                                                                "micro": 0},
                                                       "package": "blockrig"},
                                           "capabilities": []}}
    results: list[dict[str, Any]] = []

    def work(c: Raw) -> None:
        c.ask(NEG)
        for _ in range(20):
            results.append(c.ask('{"execute": "query-status"}\n'))

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 120 and all(r["return"]["status"] == "running" for r in results)
    for c in clients:
        c.close()


def test_the_client_limit_and_the_socket_mode(sock: Path) -> None:
    assert sock.stat().st_mode & 0o777 == 0o600
    clients = [Raw(sock) for _ in range(MAX_CLIENTS)]
    extra = socket.socket(socket.AF_UNIX)
    extra.settimeout(10)
    extra.connect(str(sock))
    f = extra.makefile("rb")
    assert json.loads(f.readline())["error"]["desc"] == \
        f"too many QMP clients (at most {MAX_CLIENTS})"
    assert f.readline() == b""  # closed
    extra.close()
    clients.pop().close()
    deadline = time.monotonic() + 5
    while True:  # the server notices the close on its own time
        late = Raw(sock)
        if "QMP" in late.greeting or time.monotonic() > deadline:
            break
        late.close()
        time.sleep(0.05)
    assert late.ask(NEG) == {"return": {}}
    for c in [*clients, late]:
        c.close()


def test_misbehaving_clients_do_not_stop_the_server(sock: Path, blk: BlockBackend) -> None:
    for payload in (b'{"execute": "query-blo', b"\x00\xff" * 10000, b"{" * 5000,
                    b'{"execute": "qmp_capabilities"}\n{"execute": "x-rig-resume", '):
        c = Raw(sock)
        c.sock.sendall(payload)
        c.close()  # a disconnect in the middle of a message
    c = Raw(sock)
    assert c.ask(b"\x01garbage\n")["error"]["class"] == "GenericError"
    assert c.ask(b'"x"' * 10 + b"\n")["error"]["desc"].startswith("JSON parse error")
    big = c.ask(b'{"execute": "' + b"a" * (2 << 20) + b'"}\n')
    assert big["error"]["desc"] == "JSON parse error, message longer than 1048576 bytes"
    assert c.ask(NEG) == {"return": {}}
    blk.pwrite(0, b"x" * 512)
    assert c.ask('{"execute": "query-blockstats"}\n')["return"][0]["stats"]["wr_bytes"] == 512
    c.close()


def test_events_go_to_negotiated_clients_only(sock: Path, blk: BlockBackend) -> None:
    early, ready = Raw(sock), Raw(sock)
    ready.ask(NEG)
    ev = ready.ask('{"execute": "stop"}\n')  # the event comes before the return, as in QEMU
    assert ready.read() == {"return": {}}
    assert ev["event"] == "STOP" and set(ev["timestamp"]) == {"seconds", "microseconds"}
    assert abs(ev["timestamp"]["seconds"] - time.time()) < 5
    assert ready.ask('{"execute": "query-status"}\n')["return"]["status"] == "paused"
    assert ready.ask('{"execute": "cont"}\n')["event"] == "RESUME"
    assert ready.read() == {"return": {}}
    assert early.ask(NEG) == {"return": {}}  # no STOP or RESUME queued before it
    early.close()
    ready.close()


def test_the_socket_path(tmp_path: Path, blk: BlockBackend) -> None:
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()  # a socket file nobody listens on, as a killed server leaves
    with serve(str(stale), blk):
        assert Raw(stale).greeting["QMP"]["capabilities"] == []
        with pytest.raises(ConfigError, match="in use by another server"), \
                serve(str(stale), blk):
            pass
    regular = tmp_path / "file"
    regular.write_text("keep me")
    with pytest.raises(ConfigError, match="exists and is not a socket"), \
            serve(str(regular), blk):
        pass
    assert regular.read_text() == "keep me"
    with pytest.raises(ConfigError, match="cannot listen there"), \
            serve(str(tmp_path / "no" / "dir.sock"), blk):
        pass


def _qmp(path: Path) -> Any:
    q = qmp_legacy.QEMUMonitorProtocol(str(path))
    q.connect(negotiate=True)
    q.settimeout(10)
    return q


def test_stop_policy_events_and_iostatus(sock: Path, blk: BlockBackend) -> None:
    q = _qmp(sock)
    q.cmd("x-rig-add-rule", rule={"name": "full", "action": "error", "op": "write",
                                   "errno": "ENOSPC"})
    done: list[BaseException | None] = []

    def write() -> None:
        try:
            blk.pwrite(4096, b"y" * 4096)
            done.append(None)
        except OSError as e:
            done.append(e)

    t = threading.Thread(target=write)
    t.start()
    ev = q.pull_event(wait=10)
    assert ev["event"] == "BLOCK_IO_ERROR"
    assert ev["data"] == {"device": "disk", "node-name": "f0", "operation": "write",
                          "action": "stop", "nospace": True, "reason": "No space left on device"}
    assert q.pull_event(wait=10)["event"] == "STOP"
    [info] = q.cmd("query-block")
    assert (info["io-status"], info["qdev"], info["inserted"]["node-name"]) == \
        ("nospace", "/dev/loop99", "f0")
    assert blk.parked == 1 and not done
    # cont retries it: it fails again and parks again, until the rule is gone.
    q.cmd("cont")
    assert q.pull_event(wait=10)["event"] == "RESUME"
    assert q.pull_event(wait=10)["event"] == "BLOCK_IO_ERROR"
    assert q.pull_event(wait=10)["event"] == "STOP"
    q.cmd("x-rig-remove-rule", name="full")
    q.cmd("cont")
    t.join(timeout=10)
    assert done == [None] and blk.pread(4096, 4096) == b"y" * 4096
    stats = q.cmd("query-blockstats")[0]["stats"]
    assert (stats["wr_operations"], stats["failed_wr_operations"]) == (1, 2)
    q.close()


def test_fault_events_and_rule_commands(sock: Path, blk: BlockBackend) -> None:
    watcher, other = _qmp(sock), _qmp(sock)
    assert watcher.cmd("x-rig-watch-faults") == {}
    watcher.cmd("x-rig-add-rule", rule={"name": "r", "action": "error", "op": "read",
                                         "start": 0, "end": 512, "errno": "EIO"})
    with pytest.raises(OSError) as e:
        blk.pread(0, 512)
    assert e.value.errno == errno.EIO
    ev = watcher.pull_event(wait=10)
    while ev["event"] != "X_RIG_FAULT":
        ev = watcher.pull_event(wait=10)
    assert (ev["data"]["node-name"], ev["data"]["rule"], ev["data"]["op"]) == ("f0", "r", "read")
    other_events = [e["event"] for e in other.get_events(wait=0.3)]
    assert other_events == ["BLOCK_IO_ERROR"]  # it did not ask for fault events
    rules = watcher.cmd("x-rig-query-rules")
    assert [(n["node-name"], n["driver"]) for n in rules] == [("f0", "faults"),
                                                              ("dbg", "blkdebug")]
    assert rules[0]["rules"][0]["fired"] == 1 and rules[0]["rules"][0]["rule"]["errno"] == "EIO"
    bad = watcher.cmd_raw("x-rig-add-rule", {"rule": {"action": "error", "op": "fly"}})
    assert bad["error"]["class"] == "GenericError" and "op" in bad["error"]["desc"]
    missing = watcher.cmd_raw("x-rig-disable-rule", {"name": "nope"})
    assert "no rule named 'nope'" in missing["error"]["desc"]
    watcher.close()
    other.close()


def test_blkdebug_breakpoint_and_state(sock: Path, blk: BlockBackend) -> None:
    q = _qmp(sock)
    q.cmd("x-rig-set-state", state=3)
    assert q.cmd("x-rig-query-rules", **{"node-name": "dbg"})[0]["state"] == 3
    q.cmd("x-rig-break", event="pwritev", tag="t1")
    dbg = blk.root.walk()[1]
    t = threading.Thread(target=blk.pwrite, args=(0, b"z" * 512))
    t.start()
    assert dbg.wait_break("t1", timeout=10)  # type: ignore[attr-defined]
    assert q.cmd("x-rig-resume", tag="t1") == {"resumed": 1}
    t.join(timeout=10)
    assert not t.is_alive()
    assert q.cmd_raw("x-rig-resume", {"tag": "t1"})["error"]["desc"] == \
        "no request is suspended at 't1'"
    q.close()


def test_block_set_io_throttle_inserts_and_lifts_limits(sock: Path, blk: BlockBackend) -> None:
    q = _qmp(sock)
    limits = {"bps": 0, "bps_rd": 0, "bps_wr": 0, "iops": 0, "iops_rd": 0, "iops_wr": 0}
    nope = q.cmd_raw("block_set_io_throttle", {"device": "nope", **limits})
    assert nope["error"] == {"class": "DeviceNotFound", "desc": "Device 'nope' not found"}
    bad = q.cmd_raw("block_set_io_throttle", {"device": "disk", **limits, "bps": 10,
                                              "bps_rd": 5})
    assert "cannot be used at the same time" in bad["error"]["desc"]
    assert q.cmd("block_set_io_throttle", id="/dev/loop99", **{**limits, "iops_rd": 20}) == {}
    info = q.cmd("query-block")[0]["inserted"]
    assert (info["iops_rd"], info["group"], info["drv"]) == (20, "disk", "throttle")
    start = time.monotonic()
    for i in range(6):  # 20 IOPS: the bucket takes 2, then one every 50 ms
        blk.pread(i * 512, 512)
    assert 0.15 < time.monotonic() - start < 2
    q.cmd("block_set_io_throttle", device="disk", **limits)
    start = time.monotonic()
    for i in range(20):
        blk.pread(i * 512, 512)
    assert time.monotonic() - start < 0.5
    q.close()


def test_a_client_that_does_not_read_its_replies(sock: Path) -> None:
    # Commands sent without reading the replies: the server stops reading, then catches up;
    # every reply arrives, in order.
    greedy = Raw(sock)
    greedy.ask(NEG)
    greedy.sock.sendall(b"".join(b'{"execute": "query-status", "id": %d}\n' % i
                                 for i in range(3000)))
    other = Raw(sock)
    assert other.ask(NEG) == {"return": {}}
    assert [greedy.read()["id"] for _ in range(3000)] == list(range(3000))
    other.close()
    greedy.close()


def test_a_client_that_reads_nothing_is_disconnected_past_the_bound() -> None:
    from rig.qmp.dispatcher import Dispatcher
    from rig.qmp.server import MAX_UNSENT, QmpServer, _Client

    ours, theirs = socket.socketpair()
    client = _Client(QmpServer("unused", Dispatcher()), ours)  # its writer not started
    for _ in range(MAX_UNSENT):
        client.send(b"event\r\n")
    states = [client.closed]
    client.send(b"one more\r\n")
    states.append(client.closed)
    assert states == [False, True]
    theirs.close()


def test_a_rule_armed_on_a_graph_without_a_faults_node(tmp_path: Path) -> None:
    with rig.open({"driver": "memory", "size": 1 << 20}) as b, \
            serve(str(tmp_path / "s"), b):
        q = _qmp(tmp_path / "s")
        assert q.cmd("x-rig-query-rules") == []
        q.cmd("x-rig-add-rule", rule={"name": "w", "action": "error", "op": "write",
                                       "errno": "EROFS"})
        with pytest.raises(OSError) as e:
            b.pwrite(0, b"x" * 512)
        assert e.value.errno == errno.EROFS
        [node] = q.cmd("x-rig-query-rules")
        assert (node["driver"], node["rules"][0]["fired"]) == ("faults", 1)
        q.cmd("x-rig-remove-rule", name="w")
        b.pwrite(0, b"x" * 512)
        assert b.pread(0, 512) == b"x" * 512
        q.close()
