"""The ``compress`` filter (iotest 214), side by side with qemu-io 7.2: writes through it,
unaligned ones too, leave qcow2 images ``qemu-img compare`` calls identical, with the same number
of compressed clusters (``qemu-img check``); a format that cannot compress is refused with QEMU's
words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.helpers import normalise, qemu_io, rig_io
from tests.formats.helpers import check_clean, run

pytestmark = pytest.mark.rig_needs("qemu_utils")

ENV = {"RIG_IO_NAME": "qemu-io"}
CS = 0x10000


def compressed(img: Path) -> int:
    out = run("qemu-img", "check", "--output=json", img).stdout
    return int(json.loads(out).get("compressed-clusters", 0))


@pytest.mark.parametrize("writes,spec", [
    (["write -P 0xbb 0 229376", "write -P 0xcc 278528 229376"], "image-opts"),  # iotest 214
    (["write -P 0x11 4096 100", "write -z 1M 64k", "read -P 0x11 4096 100"], "json"),
    (["write -P 0x22 0 1M", "read -P 0x22 0 1M"], "image-opts"),
], ids=["214", "partial", "whole"])
def test_writes_are_compressed_as_qemu(tmp_path: Path, writes: list[str], spec: str) -> None:
    imgs = []
    for tool in ("qemu", "rig"):
        img = tmp_path / f"{tool}.qcow2"
        run("qemu-img", "create", "-q", "-f", "qcow2", "-o", f"cluster_size={CS}", img, "2M")
        if spec == "json":
            target = ["json:{'driver': 'compress', 'file': {'driver': 'qcow2', "
                      f"'file': {{'driver': 'file', 'filename': '{img}'}}}}}}"]
        else:
            target = ["--image-opts", "driver=compress,file.driver=qcow2,"
                      f"file.file.driver=file,file.file.filename={img}"]
        args = [a for w in writes for a in ("-c", w)] + target
        res = qemu_io(*args) if tool == "qemu" else rig_io(*args, env=ENV)
        assert res.rc == 0 and "failed" not in res.out, res.out + res.err
        imgs.append((img, res))
    (qimg, q), (rimg, r) = imgs
    assert (normalise(r.out), r.err) == (normalise(q.out), q.err)
    check_clean(rimg)
    assert compressed(rimg) == compressed(qimg) > 0
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", qimg, rimg)


@pytest.mark.parametrize("child", ["driver=raw,file.driver=file", "driver=file"])
def test_refused_over_a_format_that_cannot_compress(tmp_path: Path, child: str) -> None:
    img = tmp_path / "r.img"
    img.write_bytes(bytes(1 << 20))
    opts = ",".join(f"file.{kv}" for kv in child.split(","))
    opts = opts.replace("file.file.driver=file", "file.file.driver=file,"
                        f"file.file.filename={img}")
    if child == "driver=file":
        opts += f",file.filename={img}"
    args = ["-c", "write 0 4k", "--image-opts", f"driver=compress,{opts}"]
    q, r = qemu_io(*args), rig_io(*args, env=ENV)
    assert (r.rc, r.out, r.err) == (q.rc, q.out, q.err)
    assert "Compression is not supported for underlying format" in r.err
