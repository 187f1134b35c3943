"""Images with internal snapshots (made by ``qemu-img snapshot``): the rig writes to them without
touching the snapshots (shared L2 tables and data clusters are copied first), ``qemu-img check``
finds them clean, and applying the snapshot brings the old data back."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.helpers import normalise, qemu_io, rig_io
from tests.formats.helpers import check_clean, run

pytestmark = pytest.mark.rig_needs("qemu_utils")

ENV = {"RIG_IO_NAME": "qemu-io"}


def script(*cmds: str) -> list[str]:
    return [x for c in cmds for x in ("-c", c)]


def test_write_over_a_snapshot(tmp_path: Path) -> None:
    img = tmp_path / "s.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", img, "64M")
    run("qemu-io", "-f", "qcow2", *script("write -P 1 0 4M", "write -P 2 32M 64k"), img)
    run("qemu-img", "snapshot", "-c", "s1", img)
    res = rig_io("-f", "qcow2", *script("write -P 3 1M 1M", "write -P 4 32M 4k",
                                        "write -z 2M 64k", "discard 3M 128k",
                                        "read -P 1 0 1M"), str(img), env=ENV)
    assert res.rc == 0 and "fail" not in res.out, res.out + res.err
    check_clean(img)
    res = qemu_io("-f", "qcow2", *script("read -P 1 0 1M", "read -P 3 1M 1M",
                                         "read -P 4 32M 4k", "read -P 0 2M 64k",
                                         "read -P 0 3M 128k", "read -P 2 33558528 61440"),
                  str(img))
    assert "fail" not in res.out, res.out
    run("qemu-img", "snapshot", "-a", "s1", img)
    res = qemu_io("-f", "qcow2", *script("read -P 1 0 4M", "read -P 2 32M 64k"), str(img))
    assert "fail" not in res.out, res.out
    run("qemu-img", "snapshot", "-d", "s1", img)
    check_clean(img)


def test_v2_resize_refused_with_snapshots(tmp_path: Path) -> None:
    out = []
    for tool in ("qemu", "rig"):
        img = tmp_path / f"{tool}.qcow2"
        run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", img, "1M")
        run("qemu-img", "snapshot", "-c", "s1", img)
        args = ["-f", "qcow2", *script("truncate 2M", "length"), str(img)]
        res = qemu_io(*args) if tool == "qemu" else rig_io(*args, env=ENV)
        out.append((res.rc, normalise(res.out), res.err))
    assert out[1] == out[0]
    assert "Can't resize a v2 image which has snapshots" in out[1][2]
