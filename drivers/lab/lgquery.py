"""``python -m rig.drivers.lab.lgquery HOST:PORT``: the labgrid coordinator's places and
resources, as one JSON object on stdout.

It runs in a process of its own (:mod:`rig.drivers.lab.places` starts it) so that the gRPC
library and its threads never live in a test process that forks QEMU and ssh. It reads through
``labgrid.remote.client.start_session``, the session labgrid's own ``RemotePlace`` uses, and
writes::

    {"places": [{"name", "tags", "acquired", "matches"}],
     "resources": [{"path": "exporter/group/cls/name", "cls", "avail", "acquired", "params",
                    "places": [names of the places that match it]}]}

A failure is one line on stderr and status 1 (2 when the address is malformed).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any


class _Last(logging.Handler):
    """Keeps labgrid's last log message (it logs why a connection failed) instead of printing
    it: the reason goes into our one line."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.message = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.message = record.getMessage()


def query(address: str) -> dict[str, Any]:
    from labgrid.remote.client import start_session

    session = start_session(address)
    try:
        places = [{"name": p.name, "tags": dict(p.tags), "acquired": p.acquired or "",
                   "matches": [str(m) for m in p.matches]}
                  for p in session.places.values()]
        resources = []
        for exporter, groups in session.resources.items():
            for group, entries in groups.items():
                for name, entry in entries.items():
                    key = (exporter, group, entry.cls, name)
                    resources.append({
                        "path": "/".join(key), "cls": entry.cls, "avail": bool(entry.avail),
                        "acquired": entry.acquired or "", "params": dict(entry.params),
                        "places": [p.name for p in session.places.values()
                                   if p.getmatch(key) is not None],
                    })
        return {"places": places, "resources": resources}
    finally:
        session.loop.run_until_complete(session.stop())
        session.loop.run_until_complete(session.close())


def main(argv: list[str]) -> int:
    if len(argv) != 1 or ":" not in argv[0]:
        print("usage: python -m rig.drivers.lab.lgquery HOST:PORT", file=sys.stderr)
        return 2
    last = _Last()
    logging.basicConfig(handlers=[last], force=True)
    try:
        data = query(argv[0])
    except ImportError:
        print("labgrid is not installed: pip install 'blockrig[lab]'", file=sys.stderr)
        return 1
    except Exception as e:  # labgrid's errors have no common base we can name; one line
        text = " ".join((last.message or str(e)).split()) or type(e).__name__
        print(f"coordinator {argv[0]}: {text}", file=sys.stderr)
        return 1
    json.dump(data, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
