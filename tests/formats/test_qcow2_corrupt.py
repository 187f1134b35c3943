"""Unsupported features are refused on open with one line naming the feature and the file;
corrupt headers and tables are clear errors (CorruptImageError at open, EIO naming the
corruption on the data path), never a traceback from inside the driver."""

from __future__ import annotations

import errno
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rig.errors import RigError
from rig.formats.qcow2 import CorruptImageError, UnsupportedImageError, create
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
    (72, "Q", 1 << 0, "dirty bit"),
    (72, "Q", 1 << 2, "external data file"),
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


def test_dirty_and_corrupt_bits_allow_read_only(tmp_path: Path) -> None:
    for bit, error in ((1, UnsupportedImageError), (2, CorruptImageError)):
        img = image(tmp_path, f"b{bit}.qcow2")
        patch(img, 72, "Q", bit)
        with pytest.raises(error):
            open_qcow2(img)
        with open_qcow2(img, read_only=True) as blk:
            assert blk.pread(0, 100) == pattern(1, 100)


@pytest.mark.needs("qemu_utils")
def test_real_unsupported_images(tmp_path: Path) -> None:
    cases = {
        "extended L2": ["-o", "extended_l2=on"],
        "zstd compression": ["-o", "compression_type=zstd"],
        "external data file": ["-o", f"data_file={tmp_path / 'data.raw'}"],
    }
    for feature, opts in cases.items():
        img = tmp_path / "x.qcow2"
        run("qemu-img", "create", "-f", "qcow2", *opts, img, "1M")
        with pytest.raises(UnsupportedImageError, match=feature):
            open_qcow2(img)
    img = tmp_path / "s.qcow2"
    run("qemu-img", "create", "-f", "qcow2", img, "1M")
    run("qemu-img", "snapshot", "-c", "snap", img)
    with pytest.raises(UnsupportedImageError, match="internal snapshots"):
        open_qcow2(img)


@pytest.mark.parametrize("offset,fmt,value,what", [
    (40, "Q", 1 << 40, "past the end of the file"),     # L1 table offset
    (40, "Q", 3 * CS + 8, "not cluster aligned"),
    (40, "Q", CS, "overlaps"),                          # L1 on the refcount table
    (96, "I", 7, "refcount_order 7"),
    (20, "I", 30, "cluster_bits 30"),
    (36, "I", 0, "too small for the image size"),      # l1_size
    (56, "I", 1 << 30, "too large"),                    # refcount_table_clusters
    (48, "Q", 5, "not cluster aligned"),                # refcount table offset
])
def test_corrupt_header(tmp_path: Path, offset: int, fmt: str, value: int, what: str) -> None:
    img = image(tmp_path)
    patch(img, offset, fmt, value)
    with pytest.raises(CorruptImageError, match=what) as exc:
        open_qcow2(img)
    assert str(img) in str(exc.value)


@pytest.mark.parametrize("entry,what", [
    (0x8000_0000_0100_0000, "past the end of the file"),
    (0x8000_0000_0000_3000 + 0x100, "reserved bits"),
    (0x8000_0000_0000_0000 | (3 * CS), "maps onto the L1 table"),
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


def test_refcount_zero_on_metadata_detected(tmp_path: Path) -> None:
    """A refcount block that says the L1 table is free: allocating must not hand it out."""
    img = image(tmp_path)
    h = decode(img.read_bytes()[:CS])
    with open(img, "rb") as f:
        f.seek(h.refcount_table_offset)
        block = int(struct.unpack(">Q", f.read(8))[0])
    for c in range(12):
        patch(img, block + 2 * c, "H", 0)  # every early cluster "free"
    with open_qcow2(img) as blk, pytest.raises(OSError, match="refcount 0"):
        blk.pwrite(900_000, b"x" * 10)


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


# ------------------------------------------------------------------ mutation
_PRISTINE: dict[str, bytes] = {}


def pristine(tmp: Path, source: str) -> tuple[bytes, list[tuple[int, int]]]:
    """An image with data and a zero cluster (``rig``), or compressed clusters made by
    ``qemu-img convert -c``, and its metadata ranges."""
    if source not in _PRISTINE:
        img = tmp / "p.qcow2"
        if source == "rig":
            create(img, SIZE, cluster_size=CS, version=3)
            with open_qcow2(img) as blk:
                blk.pwrite(0, pattern(3, 30_000))
                blk.pwrite(700_000, pattern(4, 5000))
                blk.write_zeroes(8192, 8192)
        else:
            raw = tmp / "p.raw"
            raw.write_bytes(pattern(3, 100_000) + bytes(SIZE - 100_000))
            run("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o",
                f"cluster_size={CS}", raw, img)
        _PRISTINE[source] = img.read_bytes()
    data = _PRISTINE[source]
    h = decode(data[:CS])
    l1 = h.l1_table_offset
    l2 = int(struct.unpack_from(">Q", data, l1)[0]) & 0x00FF_FFFF_FFFF_FE00
    rb = int(struct.unpack_from(">Q", data, h.refcount_table_offset)[0])
    ranges = [(0, 120), (l1, l1 + 16), (l2, l2 + 200), (h.refcount_table_offset,
              h.refcount_table_offset + 16), (rb, rb + 64)]
    return data, ranges


@pytest.mark.parametrize("source", ["rig", pytest.param("qemu-compressed",
                                                     marks=pytest.mark.needs("qemu_utils"))])
@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_images_fail_cleanly(tmp_path: Path, source: str, data: st.DataObject) -> None:
    image_bytes, ranges = pristine(tmp_path, source)
    buf = bytearray(image_bytes)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        start, end = data.draw(st.sampled_from(ranges), label="area")
        pos = data.draw(st.integers(start, end - 1), label="pos")
        buf[pos] = data.draw(st.integers(0, 255), label="byte")
    img = tmp_path / "m.qcow2"
    img.write_bytes(bytes(buf))
    try:
        blk = open_qcow2(img)
    except RigError as e:
        assert str(e) and "\n" not in str(e)
        return
    with blk:
        for op in ("read", "status", "write", "zero", "discard", "read"):
            try:
                if op == "read":
                    blk.pread(0, SIZE)
                elif op == "status":
                    pos = 0
                    while pos < SIZE:
                        pos += blk.block_status(pos, SIZE - pos).length
                elif op == "write":
                    blk.pwrite(1000, pattern(5, 70_000))
                elif op == "zero":
                    blk.write_zeroes(600_000, 20_000)
                else:
                    blk.discard(0, 16384)
                    blk.flush()
            except OSError as e:
                assert e.errno in (errno.EIO, errno.ENOTSUP), e
                assert str(e)
