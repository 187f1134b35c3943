"""qcow2 resizing (``truncate``) against qemu-io / qemu-img 7.2: what the rig grows or shrinks,
QEMU reads back and checks clean; the same script gives the same output under both tools."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.helpers import normalise, qemu_io, rig_io
from tests.formats.helpers import check_clean, run

pytestmark = pytest.mark.rig_needs("qemu_utils")

ENV = {"RIG_IO_NAME": "qemu-io"}


def script(*cmds: str) -> list[str]:
    return [x for c in cmds for x in ("-c", c)]


def test_grow_and_shrink_side_by_side(tmp_path: Path) -> None:
    """Grow past the L1 table (4 KiB clusters: 2 MiB per L2 table), shrink to a partial
    cluster, grow again: identical output, clean images that QEMU reads alike."""
    cmds = script("write -P 0xc5 0 3M", "length", "truncate 12M", "length",
                  "read -P 0xc5 0 3M", "read -P 0 3M 9M", "write -P 7 11M 1M",
                  "truncate 1000448", "length", "read -P 0xc5 0 1000448", "truncate 8M",
                  "read -P 0 1000448 7388160", "truncate 1000", "length")
    out = []
    for tool in ("qemu", "rig"):
        img = tmp_path / f"{tool}.qcow2"
        run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", img, "3M")
        res = qemu_io("-f", "qcow2", *cmds, str(img)) if tool == "qemu" else rig_io(
            "-f", "qcow2", *cmds, str(img), env=ENV)
        out.append((res.rc, normalise(res.out), res.err))
        check_clean(img)
    assert out[1] == out[0]
    assert "The new size must be a multiple of 512" in out[1][2]
    # both images read the same to QEMU (a partial last cluster keeps its old tail in both)
    proc = run("qemu-img", "compare", tmp_path / "qemu.qcow2", tmp_path / "rig.qcow2",
               check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr

def test_grow_hides_a_longer_backing_file(tmp_path: Path) -> None:
    """Over a backing file longer than the old size, the grown area reads zeroes (QEMU zeroes
    it), not the backing data."""
    base = tmp_path / "base.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", base, "8M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0xaa 0 8M", base)
    img = tmp_path / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", img, "8M")
    res = rig_io("-f", "qcow2", *script("truncate 1M", "truncate 8M", "read -P 0xaa 0 1M",
                                        "read -P 0 1M 7M"), str(img), env=ENV)
    assert "fail" not in res.out and res.rc == 0, res.out + res.err
    check_clean(img)
    res = qemu_io("-f", "qcow2", *script("read -P 0xaa 0 1M", "read -P 0 1M 7M"), str(img))
    assert "fail" not in res.out, res.out
