"""qemu-io's commands that end the process the hard way: ``sigraise`` (raise a signal, after
flushing standard output and error, as qemu-io does) and ``abort`` (abort(3): nothing is
flushed, no cleanup runs). Tests use them to leave an image as a crash would (qemu-iotests 039:
a qcow2 image with lazy refcounts keeps its dirty bit)."""

from __future__ import annotations

import errno
import os
import sys

from rig.qemuio.getopt import Parsed
from rig.qemuio.numbers import strtosz
from rig.qemuio.session import Session
from rig.qemuio.table import command


@command("sigraise", "signal", "raises a signal", argmin=1, argmax=1, nofile_ok=True)
def sigraise_cmd(s: Session, p: Parsed) -> int:
    import signal  # here: its enums cost every rig io start ~1 ms (issue 19)

    text = p.args[0]
    value = strtosz(text)
    if isinstance(value, str):
        s.out.write(f"Parsing error: {value} -- {text}\n")
        return -errno.EINVAL
    if value > signal.NSIG:
        s.out.write(f"signal argument '{text}' is too large to be a valid signal\n")
        return -errno.EINVAL
    for stream in (s.out, s.err, sys.stdout, sys.stderr):
        stream.flush()
    if 0 < value < signal.NSIG:
        signal.raise_signal(value)  # a signal with no handler here ends the process
    return 0


@command("abort", "", "simulate a program crash using abort(3)", nofile_ok=True)
def abort_cmd(s: Session, p: Parsed) -> int:
    os.abort()
