"""Format drivers (raw, qcow2): nodes over a protocol node's ``file`` child."""

from __future__ import annotations

#: The first four bytes of a qcow2 image.
QCOW2_MAGIC = b"QFI\xfb"


def probe_format(path: str) -> str:
    """``qcow2`` when the file starts with the qcow2 magic, else ``raw`` (also when it cannot
    be read: the open that follows reports the real problem)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return "raw"
    return "qcow2" if head == QCOW2_MAGIC else "raw"
