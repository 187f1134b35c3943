"""The program under test for ``rig crash``'s worked example: a small sqlite application.

Run it under ``rig crash record``: it makes an ext4 filesystem on ``$RIG_DEV``, mounts it, and
commits ``ROWS`` transactions into ``app.db``, one row each. After each COMMIT has returned it
calls ``rig crash mark "committed N"``: from that point on, row N is promised to the user and
must survive a power cut. ``SYNCHRONOUS`` (the ``PRAGMA synchronous`` value, default sqlite's
own default) is the knob under test.

    rig crash record --log app.rwlog --size 32M -- python3 sqlite_app.py
    SYNCHRONOUS=OFF rig crash record --log off.rwlog --size 32M -- python3 sqlite_app.py
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile

ROWS = int(os.environ.get("ROWS", "3"))


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def mark(text: str) -> None:
    sh("rig", "crash", "mark", text)


def main() -> int:
    dev = os.environ["RIG_DEV"]
    sh("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev)
    mnt = tempfile.mkdtemp(prefix="sqlite-app-")
    sh("mount", dev, mnt)
    try:
        db = sqlite3.connect(os.path.join(mnt, "app.db"), isolation_level=None)
        pragma = os.environ.get("SYNCHRONOUS")
        if pragma:
            db.execute(f"PRAGMA synchronous={pragma}")
        db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
        os.sync()  # the empty table and the filesystem are durable before the first mark
        mark("ready")
        for n in range(1, ROWS + 1):
            db.execute("BEGIN")
            db.execute("INSERT INTO t VALUES (?, ?)", (n, f"row {n} " + "x" * 2000))
            db.execute("COMMIT")
            mark(f"committed {n}")
        db.close()
    finally:
        sh("umount", mnt)
        os.rmdir(mnt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
