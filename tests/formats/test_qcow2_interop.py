"""Interoperability with Debian's qemu-img / qemu-io, both ways.

* images the rig creates and writes pass ``qemu-img check`` and ``qemu-img compare`` against the
  content the test expects;
* images qemu-img creates (v2 and v3, several cluster sizes, backing chains, zero clusters from
  ``write -z``, compressed clusters from ``convert -c``) read back through the rig as qemu-img
  reads them, and rig writes into them keep ``qemu-img check`` clean.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rig.core.node import ReqFlags
from rig.formats.qcow2 import create
from rig.formats.qcow2.header import decode
from rig.testing.ops import pattern
from tests.formats.helpers import (
    assert_same,
    check_clean,
    compare_raw,
    convert_raw,
    open_qcow2,
    qemu_io,
    run,
)

pytestmark = pytest.mark.rig_needs("qemu_utils")

SIZE = 1 << 20
WRITES = [(0, 512, 1), (1000, 7000, 2), (65536 - 100, 300, 3), (300_000, 200_000, 4),
          (SIZE - 4096, 4096, 5)]


def apply(content: bytearray, writes: list[tuple[int, int, int]]) -> None:
    for off, n, seed in writes:
        content[off:off + n] = pattern(seed, n)


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("cluster_size", [4096, 65536, 2 << 20])
def test_rig_image_passes_qemu_check(tmp_path: Path, version: int, cluster_size: int) -> None:
    img = tmp_path / "a.qcow2"
    create(img, SIZE, cluster_size=cluster_size, version=version)
    check_clean(img)
    info = run("qemu-img", "info", img).stdout
    assert f"compat: {'0.10' if version == 2 else '1.1'}" in info
    assert f"cluster_size: {cluster_size}" in info
    expected = bytearray(SIZE)
    with open_qcow2(img) as blk:
        for off, n, seed in WRITES:
            blk.pwrite(off, pattern(seed, n))
        blk.write_zeroes(1000, 3000)
        blk.flush()
    apply(expected, WRITES)
    expected[1000:4000] = bytes(3000)
    check_clean(img)
    compare_raw(img, bytes(expected), tmp_path)


@pytest.mark.parametrize("compat,cluster_size", [("0.10", 65536), ("1.1", 4096),
                                                 ("1.1", 65536), ("1.1", 2 << 20),
                                                 ("0.10", 512)])
def test_qemu_image_read_and_written(tmp_path: Path, compat: str, cluster_size: int) -> None:
    img = tmp_path / "q.qcow2"
    run("qemu-img", "create", "-f", "qcow2", "-o", f"compat={compat},cluster_size={cluster_size}",
        img, str(SIZE))
    qemu_io(img, "write -P 0x11 0 70000", "write -P 0x22 500000 4096",
            "write -P 0x33 1040000 8576")
    if compat == "1.1":
        qemu_io(img, "write -z 0 65536", "write -P 0x44 600000 100000",
                "write -z 600000 100000")  # zero clusters keeping their host cluster
    expected = bytearray(convert_raw(img, tmp_path))
    with open_qcow2(img) as blk:
        assert_same(blk.pread(0, SIZE), bytes(expected))
        for off, n, seed in WRITES:
            blk.pwrite(off, pattern(seed, n))
        blk.pwrite(650_000, b"w" * 1000)  # into a zero-allocated cluster
        blk.write_zeroes(0, min(2 * cluster_size, SIZE), ReqFlags.MAY_UNMAP)
    apply(expected, WRITES)
    expected[650_000:651_000] = b"w" * 1000
    expected[:2 * cluster_size] = bytes(min(2 * cluster_size, SIZE))
    check_clean(img)
    compare_raw(img, bytes(expected), tmp_path)
    assert_same(convert_raw(img, tmp_path), bytes(expected))


def make_chain(tmp: Path, layers: int, version: str = "1.1") -> list[Path]:
    """base.raw <- l1.qcow2 <- ... (relative backing names, backing formats given)."""
    base = tmp / "base.raw"
    base.write_bytes(pattern(9, SIZE))
    chain = [base]
    for i in range(1, layers):
        img = tmp / f"l{i}.qcow2"
        back = chain[-1]
        fmt = "raw" if back.suffix == ".raw" else "qcow2"
        run("qemu-img", "create", "-f", "qcow2", "-o", f"compat={version}", "-b", back.name,
            "-F", fmt, img, str(SIZE))
        qemu_io(img, f"write -P 0x{0x40 + i:x} {i * 100_000} {50_000 + i}",
                f"write -P 0x{0x50 + i:x} {SIZE - 65536 * i} 3000")
        chain.append(img)
    return chain


@pytest.mark.parametrize("layers,version", [(2, "1.1"), (3, "1.1"), (3, "0.10")])
def test_backing_chain_from_qemu(tmp_path: Path, layers: int, version: str) -> None:
    chain = make_chain(tmp_path, layers, version)
    top = chain[-1]
    if version == "1.1":
        qemu_io(top, "write -z 200000 70000")
    expected = bytearray(convert_raw(top, tmp_path))
    cwd = os.getcwd()
    os.chdir("/")  # the backing name is relative to the image, not to the cwd
    try:
        with open_qcow2(top) as blk:
            assert_same(blk.pread(0, SIZE), bytes(expected))
            for off, n, seed in WRITES:
                blk.pwrite(off, pattern(seed, n))
            assert blk.root.children["backing"].read_only
    finally:
        os.chdir(cwd)
    apply(expected, WRITES)
    check_clean(top)
    compare_raw(top, bytes(expected), tmp_path)


def test_rig_creates_chain(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    create(base, SIZE, cluster_size=4096)
    with open_qcow2(base) as blk:
        blk.pwrite(0, pattern(1, SIZE))
    top = tmp_path / "top.qcow2"
    create(top, None, backing="base.qcow2", backing_fmt="qcow2")
    info = run("qemu-img", "info", "--output=human", top).stdout
    assert "backing file: base.qcow2" in info and "backing file format: qcow2" in info
    expected = bytearray(pattern(1, SIZE))
    with open_qcow2(top) as blk:
        assert blk.getlength() == SIZE
        blk.pwrite(5000, pattern(2, 100))
        blk.write_zeroes(65536, 65536)
        blk.discard(131072, 65536)
        st = blk.block_status(5000, 100)
        assert st.allocated and st.data
        st = blk.block_status(65536, 65536)
        assert st.allocated and st.zero and not st.data
        st = blk.block_status(300_000, 4096)
        assert not st.allocated
    expected[5000:5100] = pattern(2, 100)
    expected[65536:196608] = bytes(131072)
    check_clean(top)
    check_clean(base)
    compare_raw(top, bytes(expected), tmp_path)


def test_backing_overrides(tmp_path: Path) -> None:
    chain = make_chain(tmp_path, 2)
    top = chain[-1]
    own = bytearray(convert_raw(top, tmp_path))
    with open_qcow2(top, backing=None) as blk:  # backing: null -> unallocated reads zeroes
        got = blk.pread(0, SIZE)
    assert_same(got[100_000:150_001], bytes(own[100_000:150_001]))
    assert_same(got[:65536], bytes(65536))  # cluster 0 is unallocated in the top
    other = tmp_path / "other.raw"
    other.write_bytes(pattern(77, SIZE))
    with open_qcow2(top, backing={"driver": "raw", "file": {"driver": "file",
                                                            "filename": str(other)}}) as blk:
        assert_same(blk.pread(0, 1000), pattern(77, 1000))


def test_compressed_clusters(tmp_path: Path) -> None:
    src = tmp_path / "src.raw"
    data = bytearray(pattern(3, SIZE))
    data[200_000:400_000] = bytes(200_000)
    data[600_000:700_000] = b"A" * 100_000
    src.write_bytes(bytes(data))
    img = tmp_path / "c.qcow2"
    run("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096",
        src, img)
    assert "compressed" in run("qemu-img", "check", img).stdout
    with open_qcow2(img) as blk:
        assert_same(blk.pread(0, SIZE), bytes(data))
        blk.pwrite(600_100, b"xyz")  # a partial overwrite of a compressed cluster
        blk.pwrite(4096 * 5, pattern(5, 4096))  # a whole one
        blk.write_zeroes(4096 * 10, 4096 * 3)
    data[600_100:600_103] = b"xyz"
    data[4096 * 5:4096 * 6] = pattern(5, 4096)
    data[4096 * 10:4096 * 13] = bytes(4096 * 3)
    check_clean(img)
    compare_raw(img, bytes(data), tmp_path)


@pytest.mark.parametrize("refcount_bits", [1, 8, 64])
def test_refcount_widths_and_growth(tmp_path: Path, refcount_bits: int) -> None:
    """512-byte clusters with wide refcounts fill the first refcount table quickly, so the
    table grows and new refcount blocks appear; narrow refcounts pack several per byte."""
    img = tmp_path / "r.qcow2"
    size = 3 << 20
    create(img, size, cluster_size=512, refcount_bits=refcount_bits)
    with open_qcow2(img) as blk:
        blk.pwrite(0, pattern(8, size))
        blk.discard(4096, 8192)
        blk.pwrite(5000, b"z" * 100)
    expected = bytearray(pattern(8, size))
    expected[4096:12288] = bytes(8192)
    expected[5000:5100] = b"z" * 100
    check_clean(img)
    compare_raw(img, bytes(expected), tmp_path)
    assert f"refcount bits: {refcount_bits}" in run("qemu-img", "info", img).stdout
    if refcount_bits == 64:  # 64 blocks of 64 clusters: the first table covered 2 MiB
        h = decode(img.read_bytes()[:512])
        assert h.refcount_table_clusters > 1 and h.refcount_table_offset != 512


def test_map_matches_qemu(tmp_path: Path) -> None:
    """Block status: allocated in this layer, zero, data, as qemu-img map says."""
    chain = make_chain(tmp_path, 2)
    top = chain[-1]
    qemu_io(top, "write -z 655360 131072")
    import json
    qmap = json.loads(run("qemu-img", "map", "--output=json", top).stdout)
    with open_qcow2(top, read_only=True) as blk:
        for ext in qmap:
            if ext["depth"] != 0:
                continue
            st = blk.block_status(ext["start"], ext["length"])
            assert st.allocated
            assert st.zero == ext["zero"]
            assert st.data == ext["data"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_write_errors_never_corrupt(tmp_path: Path, seed: int) -> None:
    """Random EIO on the image file's writes (refcounts, tables, data): failed requests and
    flushes fail, but the image stays consistent: at most leaked clusters (qemu-img check exit 0
    or 3), and after a flush that succeeded what the rig reads is what qemu-img reads."""
    img = tmp_path / "f.qcow2"
    create(img, SIZE, cluster_size=4096)
    spec = {"driver": "qcow2", "file": {
        "driver": "faults", "seed": seed,
        "rules": [{"action": "error", "op": "write", "probability": 0.15}],
        "file": {"driver": "file", "filename": str(img)}}}
    import rig
    failures = 0
    with rig.open(spec) as blk:
        for i in range(120):
            off = (i * 37_813) % (SIZE - 9000)
            try:
                if i % 5 == 4:
                    blk.write_zeroes(off, 8192)
                elif i % 7 == 6:
                    blk.discard(off - off % 4096, 8192)
                else:
                    blk.pwrite(off, pattern(i, 9000))
            except OSError:
                failures += 1
        for _ in range(50):  # metadata is written by flush; a failed flush is retried
            try:
                blk.flush()
                break
            except OSError:
                failures += 1
        else:
            pytest.fail("flush never succeeded")
        seen = blk.pread(0, SIZE)
    assert failures > 0
    proc = run("qemu-img", "check", img, check=False)
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr  # 3: leaks only
    assert "ERROR" not in proc.stdout
    assert_same(convert_raw(img, tmp_path), seen)


def test_change_backing_file(tmp_path: Path) -> None:
    """What a stream job does at the end: the header names a new backing file (or none)."""
    chain = make_chain(tmp_path, 3)
    top = chain[-1]
    expected = convert_raw(top, tmp_path)
    with open_qcow2(top) as blk:
        node = blk.root
        assert_same(blk.pread(0, SIZE), expected)
        blk.pwrite(0, expected)  # "stream" everything into the top
        node.change_backing_file("base.raw", "raw")  # type: ignore[attr-defined]
    info = run("qemu-img", "info", top).stdout
    assert "backing file: base.raw" in info and "backing file format: raw" in info
    check_clean(top)
    compare_raw(top, expected, tmp_path)
    with open_qcow2(top) as blk:
        old = blk.root.children["backing"]
        blk.root.set_backing(None)  # type: ignore[attr-defined]
        old.close()
        blk.root.change_backing_file(None)  # type: ignore[attr-defined]
        assert_same(blk.pread(0, SIZE), expected)
    assert "backing file" not in run("qemu-img", "info", top).stdout
    check_clean(top)
    compare_raw(top, expected, tmp_path)
