"""The checker for ``rig crash``'s worked example: is every committed row still there?

``rig crash check`` runs it on each crash state with ``$RIG_DEV`` holding the state and
``$RIG_MARK`` the last mark the application had written (``committed N``, ``ready`` or none).
It mounts the filesystem (ext4 replays its journal, as after a real power cut), opens the
database as sqlite would after a crash (rolling back a hot journal), and fails when
``PRAGMA integrity_check`` is not ``ok`` or a row the application had committed is missing.

    rig crash check app.rwlog --after-mark ready --check 'python3 sqlite_check.py'
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile


def inspect(path: str) -> tuple[str, set[int]]:
    """``PRAGMA integrity_check``'s verdict (or sqlite's error) and the ids in table ``t``."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master WHERE name = 't'").fetchone()[0]
        ids = {r[0] for r in db.execute("SELECT id FROM t")} if tables else set()
        return verdict, ids
    except sqlite3.DatabaseError as e:
        return f"sqlite error: {e}", set()
    finally:
        db.close()


def main() -> int:
    dev, mark = os.environ["RIG_DEV"], os.environ.get("RIG_MARK", "")
    promised = int(mark.split()[1]) if mark.startswith("committed ") else 0
    mnt = tempfile.mkdtemp(prefix="sqlite-check-")
    subprocess.run(["mount", "-t", "ext4", dev, mnt], check=True)
    try:
        verdict, ids = inspect(os.path.join(mnt, "app.db"))
    finally:
        subprocess.run(["umount", mnt], check=True)
        os.rmdir(mnt)
    missing = sorted(set(range(1, promised + 1)) - ids)
    print(f"{os.environ.get('RIG_STATE')}: mark {mark!r}, integrity {verdict}, rows {sorted(ids)}")
    if verdict != "ok":
        print(f"integrity_check: {verdict}")
        return 1
    if missing:
        print(f"committed rows lost: {missing} (the application was told they were committed)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
