"""Who owns the signal dispositions: the ``rig`` process dies quietly on a closed pipe, as a
Unix tool does, while ``rig.cli.main.main`` called inside another program (a pytest worker, an
embedding tool) leaves that program's dispositions as they were. A SIGPIPE left at its default
there killed CI's xdist workers at their next write to a closed socket (the QMP tests close
clients in the middle of a reply)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rig.cli.main import main

RIG = [sys.executable, "-m", "rig"]


def test_main_in_process_leaves_the_callers_signals_alone() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGPIPE, signal.SIGTERM, signal.SIGINT)}
    assert before[signal.SIGPIPE] == signal.SIG_IGN  # Python's own start-up choice
    assert main([]) == 2  # no command: the help and the bad-input status
    assert main(["vm", "run", "--timeout", "0", "--", "true"]) == 2  # refused before any boot
    after = {s: signal.getsignal(s) for s in before}
    assert after == before
    a, b = __import__("socket").socketpair()
    b.close()
    try:  # with SIGPIPE at its default this would end the test process, not raise
        a.send(b"x")
        raise AssertionError("a send to a closed socket succeeded")
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        a.close()


def test_the_rig_process_dies_quietly_on_a_closed_pipe() -> None:
    r, w = os.pipe()
    os.close(r)  # the reader (``| head``) is gone before rig writes a byte
    p = subprocess.run([*RIG, "io", "-c", "help"], stdout=w, stderr=subprocess.PIPE,
                       text=True, timeout=60)
    os.close(w)
    assert p.returncode == -signal.SIGPIPE, p.stderr
    assert p.stderr == ""  # no BrokenPipeError traceback


def _sigpipe_ignored(pid: int) -> bool:
    """Whether SIGPIPE is ignored in process ``pid`` (its SigIgn mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGPIPE - 1) & 1)
    raise AssertionError(f"no SigIgn line for {pid}")


def test_a_serving_rig_does_not_die_of_a_closed_pipe(tmp_path: Path) -> None:
    """``rig run`` (and every command outside QUIET_ON_CLOSED_PIPE) keeps SIGPIPE ignored: a
    closed pipe or socket is an error it handles, not a death before its cleanup."""
    p = subprocess.Popen([*RIG, "run", "--size", "1M", "--", "sleep", "30"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        deadline = time.monotonic() + 30
        child = None
        while child is None and time.monotonic() < deadline and p.poll() is None:
            kids = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
            child = next((int(k) for k in kids
                          if Path(f"/proc/{k}/cmdline").read_bytes().startswith(b"sleep")),
                         None)
            time.sleep(0.05)
        assert child is not None, p.stderr.read() if p.stderr else ""
        assert _sigpipe_ignored(p.pid)
    finally:
        p.terminate()
        p.wait(timeout=30)
