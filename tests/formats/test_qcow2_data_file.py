"""External data files (iotests 061, 270, 289), side by side with qemu-io 7.2 on copies of one
image: the same script leaves the same metadata image and the same data file (byte for byte),
both clean for ``qemu-img check``; ``data_file_raw`` keeps the data file a raw image of the disk;
a data file named in the header or given as an option, missing, or given for an image without
one, with QEMU's messages; a failed write frees nothing (289)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.helpers import Result, normalise, qemu_io, rig_io
from tests.formats.helpers import check_clean, run

pytestmark = pytest.mark.rig_needs("qemu_utils")

ENV = {"RIG_IO_NAME": "qemu-io"}


def same(q: Result, r: Result) -> None:
    assert (r.rc, normalise(r.out), r.err) == (q.rc, normalise(q.out), q.err)


def make(tmp: Path, tool: str, opts: str = "", size: str = "4M") -> tuple[Path, Path]:
    img, data = tmp / f"{tool}.qcow2", tmp / f"{tool}.data"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o",
        f"data_file={data}" + (f",{opts}" if opts else ""), img, size)
    return img, data


def both(tmp: Path, script: list[str], opts: str = "") -> tuple[Result, Result, list[Path]]:
    out: list[Result] = []
    paths: list[Path] = []
    for tool in ("qemu", "rig"):
        img, data = make(tmp, tool, opts)
        args = ["-f", "qcow2", *[a for c in script for a in ("-c", c)], str(img)]
        out.append(qemu_io(*args) if tool == "qemu" else rig_io(*args, env=ENV))
        paths += [img, data]
    return out[0], out[1], paths


SCRIPT = ["write -P 0x11 0 100k", "write -P 0x22 1M 64k", "write -P 0x33 1100k 3k",
          "write -z 2M 128k", "discard 1M 64k", "write -P 0x44 3M 64k", "read -P 0x11 0 100k",
          "read -P 0x33 1100k 3k", "read -P 0 2M 128k", "write -c 3M 64k"]


@pytest.mark.parametrize("opts", ["", "data_file_raw=on"])
def test_same_images_as_qemu(tmp_path: Path, opts: str) -> None:
    q, r, (qimg, qdata, rimg, rdata) = both(tmp_path, SCRIPT, opts)
    same(q, r)
    assert "write failed: Operation not supported" in r.out  # no compressed clusters there
    check_clean(rimg)
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", qimg, rimg)
    assert rdata.read_bytes() == qdata.read_bytes()
    assert rdata.stat().st_size > 3 << 20  # the data went to the data file
    info = run("qemu-img", "info", rimg).stdout
    assert f"data file raw: {'true' if opts else 'false'}" in info


def test_raw_data_file_is_the_disk(tmp_path: Path) -> None:
    """data_file_raw: the data file alone reads as the disk (zero writes included)."""
    img, data = make(tmp_path, "rig", "data_file_raw=on")
    rig_io("-f", "qcow2", "-c", "write -P 0x55 0 4M", "-c", "write -z 64k 200k",
           "-c", "write -P 0x66 1M 1k", str(img), env=ENV)
    disk = tmp_path / "disk.raw"
    run("qemu-img", "convert", "-O", "raw", img, disk)
    assert data.read_bytes()[:4 << 20] == disk.read_bytes()


@pytest.mark.parametrize("case", ["renamed", "cleared", "no-data-file", "option"])
def test_opening_messages_as_qemu(tmp_path: Path, case: str) -> None:
    outs = []
    for tool in ("qemu", "rig"):
        sub = tmp_path / tool
        sub.mkdir()
        if case == "no-data-file":
            img = sub / "t.qcow2"
            run("qemu-img", "create", "-q", "-f", "qcow2", img, "1M")
            args = ["-c", f"open -o data-file.filename={sub / 'x.data'},file.filename={img}",
                    "-c", "read 0 4k"]
        else:
            img, data = make(sub, "t", size="1M")
            run("qemu-io", "-f", "qcow2", "-c", "write -P 7 0 4k", img)
            if case == "renamed":
                run("qemu-img", "amend", "-o", "data_file=foo", img)
            if case == "cleared":
                run("qemu-img", "amend", "-o", "data_file=", "--image-opts",
                    f"data-file.filename={data},file.filename={img}")
            args = ["-c", "read -P 7 0 4k", str(img)]
            if case == "option":
                args = ["-c", f"open -o data-file.filename={data},file.filename={img}",
                        "-c", "read -P 7 0 4k"]
        res = qemu_io(*args) if tool == "qemu" else rig_io(*args, env=ENV)
        outs.append((res.rc, normalise(res.out).replace(str(sub), "DIR"),
                     res.err.replace(str(sub), "DIR")))
    assert outs[1] == outs[0]
    if case != "option":
        assert "data" in outs[1][2] or "foo" in outs[1][2]


def test_failed_write_frees_nothing(tmp_path: Path) -> None:
    """iotest 289: the data write fails (blkdebug under the data file's raw node)."""
    conf = tmp_path / "blkdebug.conf"
    conf.write_text('[inject-error]\nevent = "write_aio"\nerrno = "5"\nonce = "on"\n')
    res = []
    imgs = []
    for tool in ("qemu", "rig"):
        img, data = make(tmp_path, tool, size="64k")
        spec = ("json:{'driver': 'qcow2', 'file': {'driver': 'file', 'filename': '" + str(img)
                + "'}, 'data-file': {'driver': 'raw', 'file': {'driver': 'blkdebug', 'config': '"
                + str(conf) + "', 'image': {'driver': 'file', 'filename': '" + str(data)
                + "'}}}}")
        args = ["-c", "write 0 64k", spec]
        res.append(qemu_io(*args) if tool == "qemu" else rig_io(*args, env=ENV))
        imgs.append(img)
    same(res[0], res[1])
    assert "write failed: Input/output error" in res[1].out
    check_clean(imgs[1])
