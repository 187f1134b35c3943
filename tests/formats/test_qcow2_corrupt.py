"""Unsupported features are refused on open with one line naming the feature and the file;
corrupt headers and tables are clear errors (CorruptImageError at open, EIO naming the
corruption on the data path), never a traceback from inside the driver."""

from __future__ import annotations

import errno
import struct
from pathlib import Path

import pytest

from rig.errors import RigError
from rig.formats.qcow2 import CorruptImageError, UnsupportedImageError, create
from rig.formats.qcow2.errors import qemu_words
from rig.formats.qcow2.header import decode
from rig.testing.ops import pattern
from tests.formats.helpers import open_qcow2, run

SIZE = 1 << 20
CS = 4096


def image(tmp: Path, name: str = "a.qcow2") -> Path:
    img = tmp / name
    create(img, SIZE, cluster_size=CS)
    with open_qcow2(img) as blk:
        blk.pwrite(0, pattern(1, 20_000))
        blk.pwrite(500_000, pattern(2, 9000))
    return img


def patch(img: Path, offset: int, fmt: str, value: int) -> None:
    with open(img, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(">" + fmt, value))


def l2_offset(img: Path) -> int:
    h = decode(img.read_bytes()[:CS])
    with open(img, "rb") as f:
        f.seek(h.l1_table_offset)
        return int(struct.unpack(">Q", f.read(8))[0]) & 0x00FF_FFFF_FFFF_FE00


@pytest.mark.parametrize("offset,fmt,value,feature", [
    (32, "I", 1, "encryption"),
    (72, "Q", 1 << 20, "unknown incompatible features 0x100000"),
    (72, "Q", 1 << 4, "extended L2"),
    (4, "I", 4, "version 4"),
])
def test_unsupported_features_named(tmp_path: Path, offset: int, fmt: str, value: int,
                                    feature: str) -> None:
    img = image(tmp_path)
    patch(img, offset, fmt, value)
    with pytest.raises(UnsupportedImageError) as exc:
        open_qcow2(img)
    msg = str(exc.value)
    assert feature in msg and str(img) in msg and "\n" not in msg


def test_corrupt_bit_allows_read_only(tmp_path: Path) -> None:
    img = image(tmp_path, "b2.qcow2")
    patch(img, 72, "Q", 2)
    with pytest.raises(CorruptImageError):
        open_qcow2(img)
    with open_qcow2(img, read_only=True) as blk:
        assert blk.pread(0, 100) == pattern(1, 100)


def test_dirty_bit_repaired_read_write_kept_read_only(tmp_path: Path) -> None:
    """(Lazy refcounts, tests/formats/test_qcow2_lazy_refcounts.py.) The refcounts of this
    image are right: the repair finds nothing and clears the bit."""
    img = image(tmp_path, "b1.qcow2")
    patch(img, 72, "Q", 1)
    with open_qcow2(img, read_only=True) as blk:
        assert blk.pread(0, 100) == pattern(1, 100)
    assert decode(img.read_bytes()[:CS]).incompatible_features == 1
    with open_qcow2(img) as blk:
        assert blk.pread(0, 100) == pattern(1, 100)
    assert decode(img.read_bytes()[:CS]).incompatible_features == 0


@pytest.mark.rig_needs("qemu_utils")
def test_real_unsupported_images(tmp_path: Path) -> None:
    cases = {
        "extended L2": ["-o", "extended_l2=on"],
    }
    for feature, opts in cases.items():
        img = tmp_path / "x.qcow2"
        run("qemu-img", "create", "-f", "qcow2", *opts, img, "1M")
        with pytest.raises(UnsupportedImageError, match=feature):
            open_qcow2(img)


@pytest.mark.parametrize("offset,fmt,value,what", [
    (40, "Q", 1 << 63, "invalid"),                      # L1 table offset: its end past 2^63
    (40, "Q", 3 * CS + 8, "not cluster aligned"),
    (64, "Q", 3 * CS + 8, "snapshot table offset"),     # checked even without snapshots
    (72, "Q", 1 << 3, "compression type bit"),          # set for zlib
    (96, "I", 7, "refcount_order 7"),
    (20, "I", 30, "cluster_bits 30"),
    (36, "I", 0, "too small for the image size"),      # l1_size
    (56, "I", 1 << 30, "too large"),                    # refcount_table_clusters
    (48, "Q", 5, "not cluster aligned"),                # refcount table offset
])
def test_corrupt_header(tmp_path: Path, offset: int, fmt: str, value: int, what: str) -> None:
    img = image(tmp_path)
    patch(img, offset, fmt, value)
    with pytest.raises(CorruptImageError) as exc:
        open_qcow2(img)
    assert what in exc.value.what and exc.value.path == str(img)
    # QEMU's words where QEMU makes the same check (iotest 080), else the file and the detail
    words = qemu_words(exc.value.what)
    assert str(exc.value) == (words or f"qcow2 image '{img}' is corrupt: {exc.value.what}")


@pytest.mark.parametrize("entry,what", [
    (0x8000_0000_0100_0000, "past the end of the file"),
    (0x8000_0000_0000_3000 + 0x100, "reserved bits"),
    (0x8000_0000_0000_0000 | (3 * CS), "maps onto the active L1 table"),
    (0x4000_0000_0000_2000, "does not decompress"),
])
def test_corrupt_l2_entry_is_eio(tmp_path: Path, entry: int, what: str) -> None:
    img = image(tmp_path)
    patch(img, l2_offset(img), "Q", entry)
    with open_qcow2(img) as blk:
        with pytest.raises(OSError) as exc:
            blk.pread(0, 4096)
        assert exc.value.errno == errno.EIO and what in str(exc.value)
        assert blk.pread(500_000, 100) == pattern(2, 100)  # the rest still reads
        with pytest.raises(OSError, match="writes refused"):
            blk.pwrite(800_000, b"x")


def test_refcount_zero_on_metadata_is_a_corruption_event(tmp_path: Path,
                                                         capfd: pytest.CaptureFixture[str]) -> None:
    """A refcount block that says the L1 table is free: the allocating write is refused by the
    overlap check, the image is marked corrupt and the node stops serving (QEMU's behaviour)."""
    img = image(tmp_path)
    h = decode(img.read_bytes()[:CS])
    with open(img, "rb") as f:
        f.seek(h.refcount_table_offset)
        block = int(struct.unpack(">Q", f.read(8))[0])
    for c in range(12):
        patch(img, block + 2 * c, "H", 0)  # every early cluster "free"
    with open_qcow2(img) as blk:
        with pytest.raises(OSError) as exc:
            blk.pwrite(900_000, b"x" * 10)
        assert exc.value.errno == errno.EIO and "Preventing invalid write" in str(exc.value)
        with pytest.raises(OSError) as later:
            blk.pread(0, 512)
        assert later.value.errno == errno.ENOMEDIUM
    err = capfd.readouterr().err
    assert err == ("qcow2: Marking image as corrupt: Preventing invalid write on metadata "
                   "(overlaps with qcow2_header); further corruption events will be "
                   "suppressed\n")
    assert decode(img.read_bytes()[:CS]).incompatible_features & 2  # the corrupt bit


def test_backing_loop(tmp_path: Path) -> None:
    img = tmp_path / "loop.qcow2"
    create(img, SIZE, backing="loop.qcow2", backing_fmt="qcow2")
    with pytest.raises(RigError, match="backing"):
        open_qcow2(img)


def test_missing_backing(tmp_path: Path) -> None:
    img = tmp_path / "top.qcow2"
    create(img, SIZE, backing="gone.raw", backing_fmt="raw")
    with pytest.raises(RigError, match="Could not open backing file: Could not open"):
        open_qcow2(img)
