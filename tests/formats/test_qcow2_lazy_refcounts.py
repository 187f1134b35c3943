"""Lazy refcounts and the dirty bit (iotests 039, 098), side by side with qemu-io 7.2: a writer
killed after an allocating write leaves the dirty bit and the refcounts qemu-io leaves (``qemu-img
check`` says the same of both images); a clean close clears the bit; a read-only open leaves it;
a read-write open repairs the image with QEMU's messages, and ``qemu-img check`` finds the
repaired image clean; lazy refcounts on a compat=0.10 image are refused with QEMU's words."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from tests.cli.helpers import Result, normalise, qemu_io, rig_io
from tests.formats.helpers import check_clean, run

pytestmark = pytest.mark.rig_needs("qemu_utils")

ENV = {"RIG_IO_NAME": "qemu-io"}
DIRTY = 1
LAZY = "compat=1.1,lazy_refcounts=on"


def incompat(img: Path) -> int:
    with open(img, "rb") as f:
        f.seek(72)
        return int(struct.unpack(">Q", f.read(8))[0])


def create(img: Path, opts: str, size: str = "128M") -> None:
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, img, size)


def io(tool: str, img: Path, *cmds: str, extra: tuple[str, ...] = ()) -> Result:
    args = ["-t", "writethrough", *extra, "-f", "qcow2"]
    for c in cmds:
        args += ["-c", c]
    args.append(str(img))
    return qemu_io(*args) if tool == "qemu" else rig_io(*args, env=ENV)


def same(q: Result, r: Result) -> None:
    assert (r.rc, normalise(r.out), r.err) == (q.rc, normalise(q.out), q.err)


def img_check(img: Path) -> tuple[int, str]:
    proc = run("qemu-img", "check", "-f", "qcow2", img, check=False)
    return proc.returncode, proc.stdout + proc.stderr.replace(str(img), "IMG")


def killed_pair(tmp: Path, opts: str, cmds: list[str]) -> tuple[Path, Path]:
    """The same image made by qemu-io and rig io, each killed (``sigraise 9``) after
    ``cmds``; their stdout must match."""
    qimg, rimg = tmp / "q.qcow2", tmp / "r.qcow2"
    for img in (qimg, rimg):
        create(img, opts)
    q = io("qemu", qimg, *cmds, "sigraise 9")
    r = io("rig", rimg, *cmds, "sigraise 9")
    assert q.rc == r.rc == -9
    assert normalise(r.out) == normalise(q.out)
    return qimg, rimg


SCRIPTS = [
    ["write -P 0x5a 0 512"],
    ["write -P 0x5a 0 512", "write -P 0x33 100M 70k", "write -z 1M 64k"],
    ["write -P 0x2a 0 128k", "flush"],
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_killed_writer_leaves_the_dirty_image_qemu_leaves(tmp_path: Path,
                                                          script: list[str]) -> None:
    qimg, rimg = killed_pair(tmp_path, LAZY, script)
    assert incompat(qimg) & DIRTY and incompat(rimg) & DIRTY
    q, r = img_check(qimg), img_check(rimg)
    assert q[0] != 0 and "ERROR cluster" in q[1]  # the refcounts were never written
    assert r == q


@pytest.mark.parametrize("script", SCRIPTS)
def test_read_write_open_repairs_as_qemu(tmp_path: Path, script: list[str]) -> None:
    """Both tools repair copies of one dirty image (qemu-io's) with the same messages; the
    repaired images are clean, no longer dirty, and hold the same data."""
    qimg, _ = killed_pair(tmp_path, LAZY, script)
    rimg = tmp_path / "repair-r.qcow2"
    shutil.copy(qimg, rimg)
    q = io("qemu", qimg, "write -P 0x11 4k 512")
    r = io("rig", rimg, "write -P 0x11 4k 512")
    same(q, r)
    assert "Rebuilding refcount structure" in r.err
    for img in (qimg, rimg):
        assert not incompat(img) & DIRTY
        check_clean(img)
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", qimg, rimg)


def test_repair_of_a_failed_commit(tmp_path: Path) -> None:
    """iotest 098's empty_image_prepare case: qemu-img commit fails after it set the dirty
    bit; opening the image read-write fixes the leaks, with QEMU's lines."""
    imgs = []
    for tool in ("qemu", "rig"):
        base, top = tmp_path / f"{tool}.base", tmp_path / f"{tool}.qcow2"
        create(base, "compat=1.1", "64M")
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top, "64M")
        run("qemu-io", "-f", "qcow2", "-c", "write 0 64k", top)
        conf = tmp_path / f"{tool}.conf"
        conf.write_text('[inject-error]\nevent = "empty_image_prepare"\n')
        run("qemu-img", "commit", f"blkdebug:{conf}:{top}", check=False)
        assert incompat(top) & DIRTY
        imgs.append(top)
    q = qemu_io("-c", "close", str(imgs[0]))
    r = rig_io("-c", "close", str(imgs[1]), env=ENV)
    same(q, r)
    assert "Repairing cluster" in r.err
    check_clean(imgs[1])
    assert not incompat(imgs[1]) & DIRTY


def test_read_only_open_keeps_the_dirty_bit(tmp_path: Path) -> None:
    qimg, rimg = killed_pair(tmp_path, LAZY, ["write -P 0x5a 0 512"])
    r = io("rig", rimg, "read -P 0x5a 0 512", extra=("-r",))
    same(io("qemu", qimg, "read -P 0x5a 0 512", extra=("-r",)), r)
    assert incompat(rimg) & DIRTY and incompat(qimg) & DIRTY


@pytest.mark.parametrize("opts,reopen,dirty", [
    (LAZY, None, False),                                  # a clean close clears it
    ("compat=1.1,lazy_refcounts=off", None, False),       # never set without lazy refcounts
    ("compat=1.1,lazy_refcounts=off", "lazy-refcounts=on", True),
    (LAZY, "lazy-refcounts=off", False),
])
def test_when_the_bit_is_set(tmp_path: Path, opts: str, reopen: str | None,
                             dirty: bool) -> None:
    pre = [f"reopen -o {reopen}"] if reopen else []
    write = [*pre, "write -P 0x5a 0 512"]
    if reopen is None and not dirty and opts == LAZY:
        for tool in ("qemu", "rig"):  # no kill: closed cleanly
            img = tmp_path / f"{tool}.qcow2"
            create(img, opts)
            io(tool, img, *write)
            assert not incompat(img) & DIRTY
            check_clean(img)
        return
    qimg, rimg = killed_pair(tmp_path, opts, write)
    assert bool(incompat(rimg) & DIRTY) is dirty is bool(incompat(qimg) & DIRTY)
    assert img_check(rimg) == img_check(qimg)


def test_lazy_refcounts_need_compat_1_1(tmp_path: Path) -> None:
    img = tmp_path / "v2.qcow2"
    create(img, "compat=0.10", "1M")
    args = ["--image-opts", "-c", "read 0 512",
            f"driver=qcow2,file.filename={img},lazy-refcounts=on"]
    q, r = qemu_io(*args), rig_io(*args, env=ENV)
    same(q, r)
    assert "Lazy refcounts require" in r.err


@pytest.mark.parametrize("opts", ["refcount_bits=1", "refcount_bits=2", "refcount_bits=64",
                                  "cluster_size=4k", "cluster_size=512,refcount_bits=4"])
def test_repair_writes_what_qemu_writes(tmp_path: Path, opts: str) -> None:
    """The rebuilt refcount structure (any entry width, any cluster size) is byte for byte the
    one qemu-io's repair writes: the same places, the same packing."""
    src = tmp_path / "dirty.qcow2"
    create(src, f"{LAZY},{opts}", "64M")
    killed = io("qemu", src, "write -P 1 0 200k", "write -P 2 30M 70k", "sigraise 9")
    assert killed.rc == -9 and incompat(src) & DIRTY
    qimg, rimg = tmp_path / "q.qcow2", tmp_path / "r.qcow2"
    shutil.copy(src, qimg)
    shutil.copy(src, rimg)
    same(io("qemu", qimg, "write 4k 512"), io("rig", rimg, "write 4k 512"))
    check_clean(rimg)
    assert rimg.read_bytes() == qimg.read_bytes()
