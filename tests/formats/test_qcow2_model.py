"""qcow2 against the in-memory model: random workloads (writes, FUA writes, reads, zeroes,
discards, flushes) on images of both versions, several cluster sizes, with and without a
backing file, then ``qemu-img check`` on what the rig left. And concurrent allocating writes
from several threads."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

from rig.core.backend import BlockBackend
from rig.formats.qcow2 import create
from rig.testing import profiles
from rig.testing.machines import BlockDeviceMachine
from rig.testing.ops import pattern
from tests.formats.helpers import assert_same, open_qcow2

SIZE = 256 * 1024 + 4096 * 3  # not a multiple of the cluster size: the last cluster is short
HAVE_QEMU_IMG = shutil.which("qemu-img") is not None


class Qcow2Machine(BlockDeviceMachine):
    max_len = 3 * 65536 + 1000
    repro_bundles = False

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="qcow2-model-"))
        self.image = self.dir / "top.qcow2"
        self.no_discard = False

    def make_backends(self, data: st.DataObject) -> Sequence[BlockBackend]:
        version = data.draw(st.sampled_from([2, 3]), label="version")
        cluster = data.draw(st.sampled_from([4096, 65536]), label="cluster size")
        backing = data.draw(st.sampled_from(["none", "raw", "qcow2"]), label="backing")
        cache = data.draw(st.sampled_from(["writeback", "writethrough", "unsafe", "none"]),
                          label="cache")
        name = fmt = None
        if backing == "raw":
            (self.dir / "base.raw").write_bytes(pattern(7, SIZE - 8192))  # shorter than top
            name, fmt = "base.raw", "raw"
        elif backing == "qcow2":
            create(self.dir / "base.qcow2", SIZE, cluster_size=4096)
            with open_qcow2(self.dir / "base.qcow2") as blk:
                blk.pwrite(4096, pattern(8, 100_000))
            name, fmt = "base.qcow2", "qcow2"
        create(self.image, SIZE, cluster_size=cluster, version=version, backing=name,
               backing_fmt=fmt)
        # v2 discard makes clusters unallocated, so the backing file shows through again
        self.no_discard = version == 2 and backing != "none"
        return [self.open_graph(self.wrap({"driver": "qcow2", "file": {
            "driver": "file", "filename": str(self.image)}}), cache=cache)]

    def wrap(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The graph over the image (subclasses add filters)."""
        return spec

    @rule(data=st.data())
    def discard(self, data: st.DataObject) -> None:
        if not self.no_discard:
            super().discard(data)

    def release_backends(self) -> None:
        try:
            super().release_backends()
            if HAVE_QEMU_IMG and self.backends and self.image.exists():
                proc = subprocess.run(["qemu-img", "check", str(self.image)],
                                      capture_output=True, text=True, timeout=60)
                assert proc.returncode == 0, proc.stdout + proc.stderr
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


TestQcow2Model = Qcow2Machine.TestCase
TestQcow2Model.settings = settings(profiles.selected(), max_examples=25,
                                   stateful_step_count=20)


def test_concurrent_allocating_writes(tmp_path: Path) -> None:
    """Many threads writing 512-byte pieces into the same fresh clusters: nothing is lost."""
    img = tmp_path / "c.qcow2"
    create(img, 1 << 20, cluster_size=4096)
    expected = bytearray(1 << 20)
    pieces = [(i * 512 + (i % 7) * 4096 * 8, i) for i in range(256)]
    with open_qcow2(img) as blk, ThreadPoolExecutor(8) as pool:
        def put(off: int, seed: int) -> None:
            blk.pwrite(off, pattern(seed, 512))

        for f in [pool.submit(put, off, seed) for off, seed in pieces]:
            f.result()
        for off, seed in pieces:
            expected[off:off + 512] = pattern(seed, 512)
        assert_same(blk.pread(0, 1 << 20), bytes(expected))
    if HAVE_QEMU_IMG:
        proc = subprocess.run(["qemu-img", "check", str(img)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


def test_small_l2_cache_evicts_and_writes_back(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With room for 4 L2 tables, touching 24 of them evicts clean tables and writes dirty
    ones out early (never evicting a dirty one); the content and the image stay right."""
    from rig.formats.qcow2 import driver, tables

    monkeypatch.setattr(tables, "L2_CACHE_BYTES", 4 * 4096)
    monkeypatch.setattr(driver, "L2_CACHE_BYTES", 4 * 4096)
    size = 48 << 20  # 4 KiB clusters: one L2 table maps 2 MiB
    img = tmp_path / "e.qcow2"
    create(img, size, cluster_size=4096)
    offsets = [(i * (2 << 20) + i * 4096) % size for i in range(24)]
    with open_qcow2(img) as blk:
        for i, off in enumerate(offsets):
            blk.pwrite(off, pattern(i, 5000))
        for i, off in enumerate(reversed(offsets)):
            assert_same(blk.pread(off, 5000), pattern(len(offsets) - 1 - i, 5000))
    with open_qcow2(img) as blk:
        for i, off in enumerate(offsets):
            assert_same(blk.pread(off, 5000), pattern(i, 5000))
    if HAVE_QEMU_IMG:
        proc = subprocess.run(["qemu-img", "check", str(img)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


def test_threads_mixed_ops_with_flushes(tmp_path: Path) -> None:
    """Writes, zeroes, discards, reads and flushes from 4 threads on their own quarters of an
    image over a backing file, through the backend's thread pool."""
    base = tmp_path / "base.raw"
    base.write_bytes(pattern(99, 1 << 20))
    img = tmp_path / "t.qcow2"
    create(img, 1 << 20, cluster_size=4096, backing="base.raw", backing_fmt="raw")
    expected = bytearray(pattern(99, 1 << 20))
    quarter = (1 << 20) // 4

    def work(blk: BlockBackend, q: int) -> None:
        for i in range(40):
            off = q * quarter + (i * 7349) % (quarter - 9000)
            kind = i % 5
            if kind < 2:
                blk.pwrite(off, pattern(q * 100 + i, 9000))
            elif kind == 2:
                blk.write_zeroes(off, 9000)
            elif kind == 3:
                blk.flush()
            else:
                blk.pread(off, 9000)

    with open_qcow2(img) as blk:
        futures = [blk.submit(work, blk, q) for q in range(4)]
        for f in futures:
            f.result()
        for q in range(4):  # the same operations, serially, on the model
            for i in range(40):
                off = q * quarter + (i * 7349) % (quarter - 9000)
                if i % 5 < 2:
                    expected[off:off + 9000] = pattern(q * 100 + i, 9000)
                elif i % 5 == 2:
                    expected[off:off + 9000] = bytes(9000)
        assert_same(blk.pread(0, 1 << 20), bytes(expected))
    with open_qcow2(img) as blk:
        assert_same(blk.pread(0, 1 << 20), bytes(expected))
    if HAVE_QEMU_IMG:
        proc = subprocess.run(["qemu-img", "check", str(img)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout
