"""A program under test for the QMP proofs: does O_DIRECT I/O on ``$RIG_DEV`` as told on stdin,
one command a line, and answers each on stdout (``ok SECONDS`` or ``err ERRNAME``):

* ``w OFFSET LENGTH BYTE``: write LENGTH bytes of BYTE at OFFSET;
* ``W OFFSET COUNT LENGTH BYTE``: COUNT such writes one after another from OFFSET;
* ``r OFFSET LENGTH``: read (answers ``ok SECONDS HEXDIGEST-OF-FIRST-BYTE``);
* ``f``: fsync.

It says ``ready`` first. Run by the tests as ``rig run ... -- python device_io.py``.
"""

from __future__ import annotations

import errno
import mmap
import os
import sys
import time


def main() -> None:
    fd = os.open(os.environ["RIG_DEV"], os.O_RDWR | os.O_DIRECT)
    buf = mmap.mmap(-1, 1 << 20)
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        start = time.monotonic()
        extra = ""
        try:
            if words[0] == "w":
                off, n, byte = (int(w) for w in words[1:])
                buf[:n] = bytes([byte]) * n
                os.pwritev(fd, [memoryview(buf)[:n]], off)
            elif words[0] == "W":
                off, count, n, byte = (int(w) for w in words[1:])
                buf[:n] = bytes([byte]) * n
                for i in range(count):
                    os.pwritev(fd, [memoryview(buf)[:n]], off + i * n)
            elif words[0] == "r":
                off, n = (int(w) for w in words[1:])
                os.preadv(fd, [memoryview(buf)[:n]], off)
                extra = f" {buf[0]}"
            elif words[0] == "f":
                os.fsync(fd)
            print(f"ok {time.monotonic() - start:.3f}{extra}", flush=True)
        except OSError as e:
            print(f"err {errno.errorcode.get(e.errno or 0, e.errno)}", flush=True)
    os.close(fd)


if __name__ == "__main__":
    main()
