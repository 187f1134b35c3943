"""A program under test for the QMP proofs: ext4 on ``$RIG_DEV`` and a SQLite database on it.

It makes the filesystem, mounts it on a private directory, says ``ready`` and waits for a line
on stdin; then it inserts ROWS rows in transactions of 10 (each commit fsyncs), says
``done ROWS``, unmounts and exits. The database is ``/db`` on the filesystem.
Run by the tests as ``rig run ... -- python sqlite_load.py ROWS``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile


def main() -> None:
    rows = int(sys.argv[1])
    dev = os.environ["RIG_DEV"]
    subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True)
    mnt = tempfile.mkdtemp(prefix="rig-sqlite-")
    subprocess.run(["mount", dev, mnt], check=True)
    try:
        db = sqlite3.connect(os.path.join(mnt, "db"))
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        db.commit()
        os.sync()
        print("ready", flush=True)
        sys.stdin.readline()
        for start in range(0, rows, 10):
            with db:
                db.executemany("INSERT INTO t VALUES (?, ?)",
                               [(i, f"row {i} " + "x" * 500) for i in range(start, start + 10)])
        db.close()
        print(f"done {rows}", flush=True)
    finally:
        subprocess.run(["umount", mnt], check=True)
        os.rmdir(mnt)


if __name__ == "__main__":
    main()
