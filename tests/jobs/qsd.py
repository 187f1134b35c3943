"""QEMU's block-stream, side by side: qemu-storage-daemon (Debian's qemu-system-common, not
qemu-utils) with the top image as a blockdev, driven through QMP (the ``qemu.qmp`` library), so
a test can run the same chain and the same faults through QEMU and through the rig and compare
the outcomes."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QSD = "qemu-storage-daemon"


def available() -> bool:
    if shutil.which(QSD) is None:
        return False
    try:
        import qemu.qmp  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Outcome:
    """What a stream job did, in the terms both sides share."""

    completed: bool  # COMPLETED (True) or CANCELLED (False)
    error: str | None
    offset: int
    len: int
    error_actions: list[str] = field(default_factory=list)
    stopped: list[dict[str, Any]] = field(default_factory=list)
    """query-block-jobs (status, offset, io-status) each time the job stopped on an error."""


@contextlib.contextmanager
def daemon(top: Path) -> Iterator[Any]:
    """A qemu-storage-daemon serving ``top`` as node ``top``; yields a connected QMP client."""
    from qemu.qmp.legacy import QEMUMonitorProtocol

    sockdir = Path(tempfile.mkdtemp(prefix="rig-qsd-"))
    sock = sockdir / "qmp.sock"
    node = {"driver": "qcow2", "node-name": "top",
            "file": {"driver": "file", "filename": str(top)}}
    proc = subprocess.Popen([QSD, "--chardev", f"socket,path={sock},server=on,wait=off,id=m",
                             "--monitor", "chardev=m", "--blockdev", json.dumps(node)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    qmp = None
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise AssertionError(f"qemu-storage-daemon did not start: {out}")
            time.sleep(0.01)
        qmp = QEMUMonitorProtocol(str(sock))
        qmp.connect(negotiate=True)
        qmp.settimeout(30)
        yield qmp
    finally:
        if qmp is not None:
            with contextlib.suppress(Exception):
                qmp.cmd("quit")
            with contextlib.suppress(Exception):
                qmp.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        shutil.rmtree(sockdir, ignore_errors=True)


def _next_event(qmp: Any, names: set[str], timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = qmp.pull_event(wait=max(0.01, deadline - time.monotonic()))
        if event is not None and event["event"] in names:
            return dict(event)
    raise AssertionError(f"no {sorted(names)} event from qemu-storage-daemon")


def stream(top: Path, *, base: str | None = None, on_error: str = "report",
           max_stops: int = 5) -> Outcome:
    """QMP block-stream on ``top``; a stopped job is resumed (up to ``max_stops`` times, then
    cancelled). The outcome of the job."""
    args: dict[str, Any] = {"device": "top", "job-id": "j", "on-error": on_error}
    if base is not None:
        args["base"] = base
    with daemon(top) as qmp:
        resp = qmp.cmd_raw("block-stream", args)
        if "error" in resp:
            raise AssertionError(f"block-stream: {resp['error']['desc']}")
        actions: list[str] = []
        stopped: list[dict[str, Any]] = []
        while True:
            ev = _next_event(qmp, {"BLOCK_JOB_ERROR", "BLOCK_JOB_COMPLETED",
                                   "BLOCK_JOB_CANCELLED"})
            data = ev["data"]
            if ev["event"] == "BLOCK_JOB_ERROR":
                actions.append(data["action"])
                if data["action"] == "stop":
                    job = _wait_paused(qmp)
                    stopped.append({k: job[k] for k in ("status", "offset", "io-status")})
                    if len(stopped) > max_stops:
                        qmp.cmd("block-job-cancel", device="j", force=True)
                    else:
                        qmp.cmd("block-job-resume", device="j")
                continue
            return Outcome(ev["event"] == "BLOCK_JOB_COMPLETED", data.get("error"),
                           data["offset"], data["len"], actions, stopped)


def _wait_paused(qmp: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        jobs = qmp.cmd("query-block-jobs")
        if jobs and jobs[0]["status"] == "paused":
            return dict(jobs[0])
        time.sleep(0.005)
    raise AssertionError("the stopped QEMU job never showed as paused")
