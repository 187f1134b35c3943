"""The ``file``, ``host_device`` and ``host_cdrom`` drivers open as QEMU 7.2's file-posix does
(qemu-iotests 226): open first, then check what was opened, so a directory opened read-write
is "Could not open 'X': Is a directory" and read-only the driver's type message; both device
drivers open a character device (``/dev/null``), read-only and read-write; ``locking`` is
read with QEMU's check. Compared line for line with qemu-io 7.2."""

from __future__ import annotations

from pathlib import Path

import pytest

import rig
from tests.cli.helpers import commands, qemu_io, rig_io

pytestmark = pytest.mark.rig_needs("qemu_utils")


def test_open_order_and_char_devices_as_qemu(tmp_path: Path) -> None:
    d = tmp_path / "dir"
    d.mkdir()
    script = [c for drv in ("file", "host_device", "host_cdrom") for ro in ("-r ", "")
              for f in (d, "/dev/null")
              for c in (f"open {ro}-o driver={drv},filename={f},locking=off", "close")]
    script += ["open -r -o driver=file,filename=/dev/null,locking=xyz",
               "open -r -o driver=host_device,filename=/dev/null,locking=on", "length"]
    q = qemu_io(*commands(script))
    r = rig_io(*commands(script), env={"RIG_IO_NAME": "qemu-io"})
    assert (r.rc, r.out, r.err) == (q.rc, q.out, q.err)
    assert f"Could not open '{d}': Is a directory" in r.err
    assert "driver requires '/dev/null'" in r.err  # the file driver only


def test_char_device_nodes_read_like_the_device() -> None:
    """/dev/null through host_device (read-write) and host_cdrom: length 0, nothing to
    discard with; the cdrom node has no medium (no CD drive behind it)."""
    with rig.open({"driver": "host_device", "filename": "/dev/null"}) as blk:
        assert blk.getlength() == 0
        blk.discard(0, 0)
    with rig.open({"driver": "host_cdrom", "filename": "/dev/null"}) as blk:
        assert blk.getlength() == 0
        assert not blk.is_inserted()
