"""QMP on a running export, end to end: ``rig run --qmp`` / ``rig export --qmp`` driven with the
``qemu.qmp`` library while a program does O_DIRECT I/O on the device (tests/qmp/device_io.py).

* stats before and after the program's I/O; a write-error rule armed mid-run fails exactly the
  write it covers, disarmed it fails nothing; a throttle limit set over QMP gives the new rate;
  garbage on the socket and several clients at once disturb neither the export nor the program;
* ``--on-write-error=stop``: the program blocks on the failed write, STOP and BLOCK_IO_ERROR
  arrive, ``query-block`` says ``failed`` (``nospace`` for ENOSPC under ``enospc``), and after
  ``cont`` the program completes with every byte it wrote in the image;
* a parked request and ``--timeout``: the program gets ETIMEDOUT, the request stays parked, and
  ``cont`` still lands it; SIGTERM with a request parked ends the export at once.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.rig_needs("loop", "fuse")
qmp_legacy = pytest.importorskip("qemu.qmp.legacy")

KiB, MiB = 1 << 10, 1 << 20
PROGRAM = str(Path(__file__).resolve().parent.parent / "qmp" / "device_io.py")


class Program:
    """``rig run ... -- python device_io.py`` (or ``rig export``), its lines read by a thread."""

    def __init__(self, argv: list[str], tmpdir: Path, *, rig: bool = True,
                 env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rig.cli.main", *argv] if rig else argv,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "TMPDIR": str(tmpdir), **(env or {})})
        self.lines: queue.Queue[str] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        # Read as it comes: a process the command left behind may hold the pipe open after
        # the command exits, and a read to EOF would wait for it.
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def line(self, timeout: float = 20.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout} s; stderr so far: "
                                 f"{self._err()}") from None

    def _err(self) -> str:
        if self.proc.poll() is not None:
            self._err_reader.join(timeout=5)
        return "".join(self._stderr)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def ask(self, command: str, timeout: float = 20.0) -> str:
        self.send(command)
        return self.line(timeout)

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=timeout)
        return self.proc.returncode, self._err()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def connect(path: Path) -> Any:
    qmp = qmp_legacy.QEMUMonitorProtocol(str(path))
    qmp.connect(negotiate=True)
    qmp.settimeout(20)
    return qmp


def stats(qmp: Any) -> dict[str, Any]:
    entry = qmp.cmd("query-blockstats")
    assert len(entry) == 1
    result: dict[str, Any] = entry[0]["stats"]
    return result


def wait_event(qmp: Any, name: str, timeout: float = 10.0) -> dict[str, Any]:
    """The first ``name`` event on ``qmp`` not taken yet (events of other names stay)."""
    seen: list[dict[str, Any]] = qmp.__dict__.setdefault("_seen", [])
    deadline = time.monotonic() + timeout
    while True:
        for ev in seen:
            if ev["event"] == name:
                seen.remove(ev)
                return ev
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {name} event within {timeout} s (seen: "
                                 f"{[e['event'] for e in seen]})")
        try:
            ev = qmp.pull_event(wait=left)
        except TimeoutError:
            continue
        if ev is not None:
            seen.append(ev)


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "tmp"
    d.mkdir()
    yield d


def _garbage_clients(sock: Path) -> list[bytes]:
    """Several raw clients at once, each misbehaving in its own way; returns what one of them
    got back for its bad messages."""
    answers: list[bytes] = []

    def raw(payload: bytes, read: bool) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(sock))
            f = s.makefile("rb")
            f.readline()  # greeting
            s.sendall(payload)
            if read:
                for _ in range(6):
                    answers.append(f.readline())

    neg = b'{"execute": "qmp_capabilities"}\n'
    bad = (neg + b"nonsense\n" + b"x" * (2 * MiB) + b"\n"
           + b'{"execute": "no-such-command", "id": 7}\n'
           + b'{"execute": "query-blockstats", "arguments": {"query-nodes": "yes"}}\n'
           + b'{"execute": "x-rig-add-rule", "arguments": {"rule": {"action": "boom"}}}\n')
    threads = [threading.Thread(target=raw, args=(bad, True)),
               threading.Thread(target=raw, args=(b'{"execute": "query-blo', False)),
               threading.Thread(target=raw, args=(b"\xff\xfe{{{{" * 1000, False)),
               threading.Thread(target=raw, args=(neg + b'{"execute": "query-block"}', False))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return answers


def test_qmp_drives_a_running_program(tmp_path: Path, run_dir: Path) -> None:
    sock = tmp_path / "qmp.sock"
    prog = Program(["run", "--qmp", str(sock), "--size", "16M", "--",
                    sys.executable, PROGRAM], run_dir)
    try:
        assert prog.line() == "ready"
        qmp = connect(sock)
        before = stats(qmp)
        assert before["wr_operations"] == 0 and before["wr_bytes"] == 0

        assert prog.ask(f"W 0 4 {64 * KiB} 1").startswith("ok")
        after = stats(qmp)
        assert after["wr_operations"] == 4
        assert after["wr_bytes"] == 256 * KiB
        assert after["wr_highest_offset"] == 256 * KiB
        assert after["wr_total_time_ns"] > 0 and after["failed_wr_operations"] == 0

        # Arm a write error on [1 MiB, 1 MiB + 4 KiB): exactly the write over it fails (the
        # graph had no faults node: the first rule puts one on top).
        name = qmp.cmd("x-rig-add-rule", rule={
            "name": "bad", "action": "error", "op": "write", "start": MiB,
            "end": MiB + 4 * KiB, "errno": "EIO"})["name"]
        assert name == "bad"
        qmp.cmd("x-rig-watch-faults")
        assert prog.ask(f"w {MiB - 64 * KiB} {64 * KiB} 2").startswith("ok")
        assert prog.ask(f"w {MiB} {64 * KiB} 2") == "err EIO"
        assert prog.ask(f"w {MiB + 64 * KiB} {64 * KiB} 2").startswith("ok")
        fault = wait_event(qmp, "X_RIG_FAULT")
        assert fault["data"]["rule"] == "bad" and fault["data"]["offset"] == MiB
        assert fault["data"]["errno_name"] == "EIO"
        err = wait_event(qmp, "BLOCK_IO_ERROR")
        assert err["data"]["action"] == "report" and err["data"]["operation"] == "write"
        [faults] = qmp.cmd("x-rig-query-rules")
        assert [(r["name"], r["enabled"], r["fired"]) for r in faults["rules"]] == \
            [("bad", True, 1)]
        assert stats(qmp)["failed_wr_operations"] == 1
        qmp.cmd("x-rig-disable-rule", name="bad")
        assert prog.ask(f"w {MiB} {64 * KiB} 3").startswith("ok")
        assert qmp.cmd("x-rig-query-rules")[0]["rules"][0]["fired"] == 1

        # Garbage and several clients at once: answered, and nothing else is disturbed.
        answers = _garbage_clients(sock)
        classes = [json.loads(a)["error"]["class"] for a in answers[1:]]
        assert classes == ["GenericError", "GenericError", "CommandNotFound",
                           "GenericError", "GenericError"]
        assert json.loads(answers[3])["id"] == 7
        assert prog.ask(f"w {2 * MiB} {64 * KiB} 4").startswith("ok")
        second = connect(sock)
        assert second.cmd("query-status")["running"] is True
        second.close()

        # A throttle limit set over QMP: 2 MiB at 2 MiB/s takes about a second (the bucket
        # lets the first 1/10 s through at once), and lifting it makes it fast again.
        qmp.cmd("block_set_io_throttle", device="disk", bps=0, bps_rd=0,
                    bps_wr=2 * MiB, iops=0, iops_rd=0, iops_wr=0)
        assert qmp.cmd("query-block")[0]["inserted"]["bps_wr"] == 2 * MiB
        took = float(prog.ask(f"W {4 * MiB} 32 {64 * KiB} 5").split()[1])
        assert 0.75 < took < 2.0, took
        qmp.cmd("block_set_io_throttle", device="disk", bps=0, bps_rd=0, bps_wr=0,
                    iops=0, iops_rd=0, iops_wr=0)
        took = float(prog.ask(f"W {4 * MiB} 32 {64 * KiB} 6").split()[1])
        assert took < 0.5, took
        qmp.close()
        rc, err_text = prog.finish()
        assert rc == 0, err_text
    finally:
        prog.kill()
    assert not sock.exists()


def _rules(path: Path, *rules: tuple[str, int, str]) -> Path:
    """A rules file: one write error per (name, offset, errno), 4 KiB each."""
    path.write_text("".join(
        f'[[rules]]\nname = "{name}"\naction = "error"\nop = "write"\nstart = {off}\n'
        f'end = {off + 4 * KiB}\nerrno = "{err}"\n\n' for name, off, err in rules))
    return path


def _blocked(prog: Program, seconds: float = 0.5) -> bool:
    """True if the program has not answered within ``seconds``."""
    try:
        line = prog.lines.get(timeout=seconds)
    except queue.Empty:
        return True
    prog.lines.put(line)
    return False


def test_stop_policy_parks_the_write_until_cont(tmp_path: Path, run_dir: Path) -> None:
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(8 * MiB))
    sock = tmp_path / "qmp.sock"
    rules = _rules(tmp_path / "rules.toml", ("bad", MiB, "EIO"))
    prog = Program(["run", "--qmp", str(sock), "--on-write-error=stop", "--faults", str(rules),
                    str(img), "--", sys.executable, PROGRAM], run_dir)
    try:
        assert prog.line() == "ready"
        qmp = connect(sock)
        assert prog.ask(f"w 0 {64 * KiB} 17").startswith("ok")
        prog.send(f"w {MiB} {64 * KiB} 34")  # over the bad range: parked
        err = wait_event(qmp, "BLOCK_IO_ERROR")
        assert err["data"] == {"device": "disk", "node-name": err["data"]["node-name"],
                               "operation": "write", "action": "stop", "nospace": False,
                               "reason": "Input/output error"}
        wait_event(qmp, "STOP")
        assert _blocked(prog)
        [block] = qmp.cmd("query-block")
        assert block["io-status"] == "failed"
        assert qmp.cmd("query-status") == {"status": "io-error", "singlestep": False,
                                           "running": False}
        # A write elsewhere waits too while the device is stopped, as a stopped guest does.
        qmp.cmd("x-rig-disable-rule", name="bad")
        assert qmp.cmd("cont") == {}
        wait_event(qmp, "RESUME")
        assert prog.line().startswith("ok")  # the parked write, retried, succeeded
        assert qmp.cmd("query-block")[0]["io-status"] == "ok"
        assert prog.ask(f"w {2 * MiB} {64 * KiB} 51").startswith("ok")
        assert prog.ask("f").startswith("ok")
        qmp.close()
        rc, err_text = prog.finish()
        assert rc == 0, err_text
        assert f"stopped: write of {64 * KiB} bytes at offset {MiB}" in err_text
        assert "Input/output error (EIO)" in err_text
    finally:
        prog.kill()
    data = img.read_bytes()
    assert data[:64 * KiB] == bytes([17]) * (64 * KiB)
    assert data[MiB:MiB + 64 * KiB] == bytes([34]) * (64 * KiB)
    assert data[2 * MiB:2 * MiB + 64 * KiB] == bytes([51]) * (64 * KiB)
    assert data.count(0) == len(data) - 3 * 64 * KiB


def test_enospc_policy_stops_on_enospc_and_reports_eio(tmp_path: Path, run_dir: Path) -> None:
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(4 * MiB))
    sock = tmp_path / "qmp.sock"
    rules = _rules(tmp_path / "rules.toml", ("full", MiB, "ENOSPC"), ("eio", 2 * MiB, "EIO"))
    prog = Program(["run", "--qmp", str(sock), "--on-write-error=enospc", "--faults",
                    str(rules), str(img), "--", sys.executable, PROGRAM], run_dir)
    try:
        assert prog.line() == "ready"
        qmp = connect(sock)
        assert prog.ask(f"w {2 * MiB} 4096 1") == "err EIO"  # not ENOSPC: reported
        assert wait_event(qmp, "BLOCK_IO_ERROR")["data"]["action"] == "report"
        prog.send(f"w {MiB} 4096 2")
        err = wait_event(qmp, "BLOCK_IO_ERROR")["data"]
        assert (err["action"], err["nospace"], err["reason"]) == \
            ("stop", True, "No space left on device")
        wait_event(qmp, "STOP")
        assert _blocked(prog, 0.3)
        assert qmp.cmd("query-block")[0]["io-status"] == "nospace"
        # Failing it instead of retrying: the program gets the ENOSPC.
        assert qmp.cmd("x-rig-fail-stopped") == {}
        assert prog.line() == "err ENOSPC"
        wait_event(qmp, "RESUME")
        assert qmp.cmd("query-status")["status"] == "running"
        qmp.close()
        rc, err_text = prog.finish()
        assert rc == 0, err_text
    finally:
        prog.kill()


def test_a_parked_request_under_timeout_and_sigterm(tmp_path: Path, run_dir: Path) -> None:
    """``--timeout``: the program gets ETIMEDOUT, the request stays parked and lands on
    ``cont``; SIGTERM with a request parked fails it and the export ends at once."""
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(4 * MiB))
    sock = tmp_path / "qmp.sock"
    rules = _rules(tmp_path / "rules.toml", ("bad", MiB, "EIO"))
    server = Program(["export", "--qmp", str(sock), "--on-write-error=stop", "--timeout", "1",
                      "--faults", str(rules), str(img)], run_dir)
    writer: Program | None = None
    try:
        dev = server.line()
        qmp = connect(sock)
        writer = Program([sys.executable, PROGRAM], run_dir, rig=False, env={"RIG_DEV": dev})
        assert writer.line() == "ready"
        start = time.monotonic()
        assert writer.ask(f"w {MiB} 4096 7") == "err ETIMEDOUT"
        assert 0.9 < time.monotonic() - start < 5
        wait_event(qmp, "STOP")
        assert qmp.cmd("query-block")[0]["io-status"] == "failed"
        qmp.cmd("x-rig-disable-rule", name="bad")
        qmp.cmd("cont")
        wait_event(qmp, "RESUME")
        deadline = time.monotonic() + 5
        while img.read_bytes()[MiB] != 7 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert img.read_bytes()[MiB:MiB + 4096] == bytes([7]) * 4096  # it landed after all

        qmp.cmd("x-rig-enable-rule", name="bad")
        writer.send(f"w {MiB} 4096 8")
        assert writer.proc.stdin is not None
        writer.proc.stdin.close()  # it exits once the write is answered
        wait_event(qmp, "STOP")
        qmp.close()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=15) == 0
        # Failed by the teardown (EIO), or answered by the timeout first on a slow machine.
        assert writer.line() in ("err EIO", "err ETIMEDOUT")
        assert writer.proc.wait(timeout=10) == 0
    finally:
        server.kill()
        if writer is not None:
            writer.kill()
    assert img.read_bytes()[MiB] == 7
    assert not sock.exists()


def test_sqlite_on_ext4_survives_a_stop_and_cont(tmp_path: Path, run_dir: Path) -> None:
    """SQLite commits on ext4 on the export while every write fails and the device stops: the
    program blocks, and after ``cont`` it finishes with every row in the image."""
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(32 * MiB)
    sock = tmp_path / "qmp.sock"
    load = str(Path(PROGRAM).with_name("sqlite_load.py"))
    prog = Program(["run", "--qmp", str(sock), "--on-write-error=stop", str(img), "--",
                    sys.executable, load, "200"], run_dir)
    try:
        assert prog.line(60) == "ready"
        qmp = connect(sock)
        qmp.cmd("x-rig-add-rule", rule={"name": "all", "action": "error", "op": "write",
                                         "errno": "EIO"})
        prog.send("go")
        assert wait_event(qmp, "BLOCK_IO_ERROR")["data"]["action"] == "stop"
        wait_event(qmp, "STOP")
        assert _blocked(prog, 0.5)
        assert qmp.cmd("query-block")[0]["io-status"] == "failed"
        qmp.cmd("x-rig-disable-rule", name="all")
        qmp.cmd("cont")
        assert prog.line(60) == "done 200"
        qmp.close()
        rc, err_text = prog.finish(60)
        assert rc == 0, err_text
        assert "stopped: write" in err_text
    finally:
        prog.kill()
    out = tmp_path / "db"
    subprocess.run(["debugfs", "-R", f"dump /db {out}", str(img)], check=True,
                   capture_output=True)
    import sqlite3

    db = sqlite3.connect(out)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*), min(id), max(id) FROM t").fetchone() == (200, 0, 199)
    finally:
        db.close()


def test_stats_json_at_the_end_and_stop_without_qmp(tmp_path: Path, run_dir: Path) -> None:
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(4 * MiB))
    for argv in (["export", "--on-write-error=stop", str(img)],
                 ["run", "--on-read-error=stop", str(img), "--", "true"]):
        done = subprocess.run([sys.executable, "-m", "rig.cli.main", *argv],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2
        assert "needs --qmp SOCKET" in done.stderr and "Traceback" not in done.stderr
    server = Program(["export", "--stats", "json", str(img)], run_dir)
    try:
        dev = server.line()
        writer = subprocess.run([sys.executable, PROGRAM], input=f"W 0 3 {64 * KiB} 9\nf\n",
                                capture_output=True, text=True, timeout=60,
                                env={**os.environ, "RIG_DEV": dev})
        assert writer.stdout.split("\n")[1].startswith("ok"), writer.stdout
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
        entry = json.loads(server.line())
    finally:
        server.kill()
    assert (entry["device"], entry["qdev"]) == ("disk", dev)
    assert (entry["stats"]["wr_operations"], entry["stats"]["wr_bytes"]) == (3, 192 * KiB)
    assert entry["stats"]["flush_operations"] >= 1


def test_clients_gone_before_their_replies_stop_nothing(tmp_path: Path, run_dir: Path) -> None:
    """Clients that send commands and close without reading a reply: the server's writes to
    them fail, and that is all (``rig run`` used to die of SIGPIPE there, exit status 141,
    taking the program's device with it)."""
    sock = tmp_path / "qmp.sock"
    prog = Program(["run", "--qmp", str(sock), "--size", "16M", "--",
                    sys.executable, PROGRAM], run_dir)
    try:
        assert prog.line() == "ready"
        burst = (b'{"execute": "qmp_capabilities"}\n'
                 + b'{"execute": "query-block"}\n' * 200)
        for _ in range(20):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(str(sock))
                s.recv(4096)  # the greeting, then nothing more is read
                s.sendall(burst)
        time.sleep(0.5)  # the server writes its replies to the closed sockets
        assert prog.proc.poll() is None, prog.proc.stderr
        qmp = connect(sock)
        assert qmp.cmd("query-status")["running"] is True
        qmp.close()
        assert prog.ask(f"w 0 {64 * KiB} 1").startswith("ok")
        rc, err_text = prog.finish()
        assert rc == 0, err_text
    finally:
        prog.kill()
