"""QEMU's metadata overlap checks, side by side with qemu-io 7.2: the same image (a refcount table
entry with one bit flipped, so it points a refcount block at the cluster the next write
allocates), the same commands and ``overlap-check`` options; the same output, exit status,
corruption line and image bytes afterwards. Then the marked image: refused read-write with
QEMU's words, readable read-only."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.cli.helpers import Result, normalise, qemu_io, rig_io
from tests.formats.helpers import run

pytestmark = pytest.mark.rig_needs("qemu_utils")

SCRIPT = ["write -P 2 1M 192k", "write -P 3 2M 4k", "read -P 1 0 4k"]
LINE = ("qcow2: Marking image as corrupt: Preventing invalid write on metadata (overlaps with "
        "refcount block); further corruption events will be suppressed\n")

_SEED: dict[str, bytes] = {}


def flipped(tmp: Path, name: str) -> Path:
    """qemu-img's 16 MiB image, 64 KiB of data at 0 (six clusters), and refcount table entry 1
    flipped from 0 to 0x80000: a refcount block in the cluster the third new one will be."""
    if "img" not in _SEED:
        seed = tmp / "seed.qcow2"
        run("qemu-img", "create", "-f", "qcow2", seed, "16M")
        run("qemu-io", "-f", "qcow2", "-c", "write -P 1 0 64k", seed)
        data = bytearray(seed.read_bytes())
        reftable = struct.unpack_from(">Q", data, 48)[0]
        struct.pack_into(">Q", data, reftable + 8, 0x80000)
        _SEED["img"] = bytes(data)
    img = tmp / name
    img.write_bytes(_SEED["img"])
    return img


def both(tmp: Path, options: str, script: list[str]) -> tuple[Result, Result, Path, Path]:
    """The script under qemu-io and rig io (--image-opts with ``options``) on two copies."""
    out = []
    for tool, runner in (("qemu", qemu_io), ("rig", rig_io)):
        img = flipped(tmp, f"{tool}.qcow2")
        spec = f"driver=qcow2{options},file.driver=file,file.filename={img}"
        args = ["--image-opts"]
        for c in script:
            args += ["-c", c]
        out.append((runner(*args, spec), img))
    (q, qimg), (r, rimg) = out
    return q, r, qimg, rimg


@pytest.mark.parametrize("options,refused", [
    ("", True),                                                  # the default: cached
    (",overlap-check=constant", False),                          # refcount blocks not checked
    (",overlap-check=none", False),
    (",overlap-check.refcount-block=off", False),
    (",overlap-check=none,overlap-check.refcount-block=on", True),
    (",overlap-check.template=constant,overlap-check.refcount-block=on", True),
])
def test_write_over_refcount_block_as_qemu_io(tmp_path: Path, options: str,
                                              refused: bool) -> None:
    q, r, qimg, rimg = both(tmp_path, options, SCRIPT)
    assert (r.rc, normalise(r.out)) == (q.rc, normalise(q.out))
    assert r.err == q.err == (LINE if refused else "")
    if refused:
        assert "write failed: Input/output error\nwrite failed: No medium found\n" in r.out
    assert rimg.read_bytes() == qimg.read_bytes()  # the corrupt bit, and nothing else written


def test_marked_image_refused_read_write_as_qemu_io(tmp_path: Path) -> None:
    _, _, qimg, rimg = both(tmp_path, "", SCRIPT[:1])
    assert struct.unpack_from(">Q", rimg.read_bytes(), 72)[0] & 2  # the header's corrupt bit
    for tool, img in (("qemu-io", qimg), ("rig io", rimg)):
        res = (qemu_io if tool == "qemu-io" else rig_io)("-f", "qcow2", "-c", "read 0 4k",
                                                         str(img))
        assert res.rc == 1 and res.out == ""
        assert res.err == (f"{tool}: can't open device {img}: qcow2: Image is corrupt; cannot be "
                           "opened read/write\n")
    q = qemu_io("-r", "-f", "qcow2", "-c", "read -P 1 0 64k", str(qimg))
    r = rig_io("-r", "-f", "qcow2", "-c", "read -P 1 0 64k", str(rimg))
    assert (r.rc, normalise(r.out)) == (q.rc, normalise(q.out)) == (0, normalise(q.out))
    check = run("qemu-img", "check", rimg, check=False)
    assert check.stderr == "ERROR refcount block 1 is outside image\n"  # the flip, nothing more


@pytest.mark.parametrize("options", [
    ",overlap-check=bogus",
    ",overlap-check=all,overlap-check.template=none",
    ",overlap-check.active-l2=maybe",
])
def test_option_errors_as_qemu_io(tmp_path: Path, options: str) -> None:
    q, r, _, _ = both(tmp_path, options, ["read 0 512"])
    assert r.rc == q.rc == 1
    assert r.err.replace("rig io: ", "qemu-io: ") == q.err


def test_templates_are_qemus() -> None:
    """QEMU 7.2's QCOW2_OL_CONSTANT, _CACHED and _ALL, by bit number."""
    from rig.formats.qcow2 import overlap

    assert overlap.TEMPLATES["constant"] == 0b1_0010_1011
    assert overlap.TEMPLATES["cached"] == 0b1_0111_1111
    assert overlap.TEMPLATES["all"] == 0b1_1111_1111
    assert overlap.TEMPLATES["none"] == 0
