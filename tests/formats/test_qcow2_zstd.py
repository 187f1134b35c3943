"""zstd-compressed clusters (iotest 287), side by side with qemu-io 7.2: the same compressed
writes leave byte-identical images (the same libzstd, the same placement), each tool reads what
the other wrote, a cluster that does not compress is written normally, and the header checks of
the compression type fail with QEMU's words."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from tests.cli.helpers import normalise, qemu_io, rig_io
from tests.formats.helpers import check_clean, run

pytestmark = pytest.mark.rig_needs("qemu_utils")

ENV = {"RIG_IO_NAME": "qemu-io"}


def zstd_image(path: Path, size: str = "4M") -> None:
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compression_type=zstd", path, size)


def test_compressed_writes_as_qemu(tmp_path: Path) -> None:
    rand = tmp_path / "rand"
    rand.write_bytes(os.urandom(65536))
    script = ["write -c -P 0xAB 0 64k", "write -c -P 0xAC 64k 64k", "write -c -P 0xAD 128k 64k",
              "write -c -P 0x11 1M 64k", "read -P 0xAC 64k 64k", "read -v 131070 8"]
    imgs, outs = [], []
    for tool in ("qemu", "rig"):
        img = tmp_path / f"{tool}.qcow2"
        zstd_image(img)
        args = ["-f", "qcow2", *[a for c in script for a in ("-c", c)], str(img)]
        # random data does not compress: written as a normal cluster (through the compress
        # filter: rig io's 'write -c -s' does not read its source file yet)
        rnd = ["-c", f"write -s {rand} 192k 64k", "--image-opts",
               f"driver=compress,file.driver=qcow2,file.file.filename={img}"]
        for a in (args, rnd):
            outs.append(qemu_io(*a) if tool == "qemu" else rig_io(*a, env=ENV))
        imgs.append(img)
    for q, r in zip(outs[:2], outs[2:], strict=True):
        assert (r.rc, normalise(r.out), r.err) == (q.rc, normalise(q.out), q.err)
    assert "ac ac" in outs[2].out
    assert imgs[1].read_bytes() == imgs[0].read_bytes()
    check_clean(imgs[1])
    # several clusters at once: QEMU compresses them in parallel, so their places differ
    for img in imgs:
        args = ["-f", "qcow2", "-c", "write -c -P 0x22 2M 256k", str(img)]
        assert "wrote" in (qemu_io(*args) if img == imgs[0] else rig_io(*args, env=ENV)).out
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", *imgs)
    check_clean(imgs[1])
    # each reads the other's
    reads = ["-c", "read -P 0xAB 0 64k", "-c", "read -P 0x22 2M 256k", str(imgs[0])]
    assert "failed" not in rig_io("-f", "qcow2", *reads, env=ENV).out
    assert "failed" not in qemu_io("-f", "qcow2", *reads[:-1], str(imgs[1])).out


@pytest.mark.parametrize("ctype,bits", [(0, 1 << 3), (1, 0), (2, 1 << 3)],
                         ids=["zlib-with-bit", "zstd-without-bit", "unknown-type"])
def test_compression_type_checks(tmp_path: Path, ctype: int, bits: int) -> None:
    errs = []
    for tool in ("qemu", "rig"):
        img = tmp_path / f"{tool}.qcow2"
        zstd_image(img, "1M")
        with open(img, "r+b") as f:
            f.seek(72)
            f.write(struct.pack(">Q", bits))
            f.seek(104)
            f.write(bytes([ctype]))
        args = ["-f", "qcow2", "-c", "read 0 4k", str(img)]
        res = qemu_io(*args) if tool == "qemu" else rig_io(*args, env=ENV)
        assert res.rc != 0
        errs.append(res.err.replace(str(img), "IMG"))
    if ctype == 2:  # the rig names it its own way
        assert "compression type 2" in errs[1]
    else:
        assert errs[1] == errs[0]
