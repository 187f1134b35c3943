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
