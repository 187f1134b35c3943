"""Compressed writes (``write -c``) side by side with qemu-io 7.2: the same output (including
QEMU's refusals: an allocated cluster, an unaligned request), images that read the same to
qemu-img, check clean, and compressed clusters sharing host clusters as QEMU's byte allocator
packs them; also through O_DIRECT (``-t none``), where the compressed bytes land by
read-modify-write."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.helpers import normalise, qemu_io, rig_io
from tests.formats.helpers import check_clean, run

pytestmark = pytest.mark.rig_needs("qemu_utils")

SCRIPT = ["write -c -P 0x11 0 64k", "write -c -P 0x22 64k 128k", "write -c 256k 64k",
          "write -c 0 64k", "write -c 1k 64k", "write -P 0x33 320k 64k",
          "write -c -P 0x44 4032k 64k", "read -P 0x11 0 64k", "read -P 0x22 64k 128k",
          "read -P 0x33 320k 64k", "write -P 0x55 64k 4k", "read -P 0x22 68k 60k", "map"]


def _side_by_side(tmp_path: Path, args: list[str], script: list[str],
                  size: str) -> list[tuple[int, str, str]]:
    """Run ``script`` under qemu-io, then rig io, each on a fresh qcow2 image of ``size``
    (``qemu.qcow2``, ``rig.qcow2`` in ``tmp_path``), both left clean: (status, stdout, stderr)
    of each, qemu-io's first."""
    argv = [*args, *[x for c in script for x in ("-c", c)]]
    out = []
    for tool in ("qemu", "rig"):
        img = tmp_path / f"{tool}.qcow2"
        run("qemu-img", "create", "-q", "-f", "qcow2", img, size)
        res = qemu_io(*argv, str(img)) if tool == "qemu" else rig_io(
            *argv, str(img), env={"RIG_IO_NAME": "qemu-io"})
        out.append((res.rc, normalise(res.out), res.err))
        check_clean(img)
    return out


@pytest.mark.parametrize("cache", ["writeback", "none"])
def test_compressed_writes_as_qemu(tmp_path: Path, cache: str) -> None:
    out = _side_by_side(tmp_path, ["-t", cache, "-f", "qcow2"], SCRIPT, "4M")
    assert out[1] == out[0]
    assert "write failed: Input/output error" in out[1][1]  # over an allocated cluster
    proc = run("qemu-img", "compare", tmp_path / "qemu.qcow2", tmp_path / "rig.qcow2")
    assert "identical" in proc.stdout
    info = run("qemu-img", "check", tmp_path / "rig.qcow2").stdout
    assert "compressed clusters" in info and "0.00% compressed" not in info


def test_compressed_write_from_a_file_as_qemu(tmp_path: Path) -> None:
    """``write -c -s FILE``: the compressed data is the file's (it used to be the 0xcd pattern)."""
    src = tmp_path / "src.bin"
    src.write_bytes(b"blockrig " * 7000 + bytes(64 * 1024 - 9 * 7000))
    script = [f"write -c -s {src} 64k 64k", "read -P 0xcd 0 4k", "map"]
    out = _side_by_side(tmp_path, ["-f", "qcow2"], script, "1M")
    assert out[1] == out[0]
    proc = run("qemu-img", "compare", tmp_path / "qemu.qcow2", tmp_path / "rig.qcow2")
    assert "identical" in proc.stdout
    raw = tmp_path / "rig.raw"
    run("qemu-img", "convert", "-O", "raw", tmp_path / "rig.qcow2", raw)
    assert raw.read_bytes()[64 * 1024:128 * 1024] == src.read_bytes()
