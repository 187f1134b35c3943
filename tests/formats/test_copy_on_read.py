"""The copy-on-read filter: reads of data the top image does not hold copy it into the top
(whole clusters, zeroes as zero clusters), ``bottom`` limits what is copied, guest writes racing
with copies are never lost, and the image stays valid for qemu-img."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

import rig
from rig.errors import ConfigError
from rig.formats.qcow2 import create
from rig.testing import profiles
from rig.testing.ops import pattern
from tests.formats.helpers import assert_same, open_qcow2
from tests.formats.test_qcow2_model import Qcow2Machine

SIZE = 1 << 20
CS = 65536


def qcow2(path: Path, **extra: Any) -> dict[str, Any]:
    return {"driver": "qcow2", "file": {"driver": "file", "filename": str(path)}, **extra}


def chain(tmp: Path) -> tuple[Path, bytearray]:
    """base.raw (pattern, a zero hole) <- top.qcow2 (one write); and the chain's content."""
    content = bytearray(pattern(1, SIZE))
    content[4 * CS:6 * CS] = bytes(2 * CS)
    (tmp / "base.raw").write_bytes(bytes(content))
    top = tmp / "top.qcow2"
    create(top, SIZE, cluster_size=CS, backing="base.raw", backing_fmt="raw")
    with open_qcow2(top) as blk:
        blk.pwrite(8 * CS + 10, b"top" * 100)
    content[8 * CS + 10:8 * CS + 310] = b"top" * 100
    return top, content


def check(img: Path) -> None:
    if shutil.which("qemu-img"):
        proc = subprocess.run(["qemu-img", "check", str(img)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


def test_read_copies_whole_clusters(tmp_path: Path) -> None:
    top, content = chain(tmp_path)
    with rig.open({"driver": "copy-on-read", "file": qcow2(top)}) as blk:
        assert not blk.block_status(0, CS).allocated
        assert_same(blk.pread(100, 5000), bytes(content[100:5100]))
        st = blk.block_status(0, SIZE)
        assert st.allocated and st.data and st.length == CS  # the whole first cluster
        assert_same(blk.pread(4 * CS + 5, 3 * CS), bytes(content[4 * CS + 5:7 * CS + 5]))
        st = blk.block_status(4 * CS, 2 * CS)
        assert st.allocated and st.zero and not st.data  # zeroes were written as zeroes
        assert_same(blk.pread(8 * CS, CS), bytes(content[8 * CS:9 * CS]))
    with open_qcow2(top, backing=None) as own:  # the copies are in the top image itself
        assert_same(own.pread(0, CS), bytes(content[:CS]))
        assert_same(own.pread(6 * CS, CS), bytes(content[6 * CS:7 * CS]))
        assert not own.block_status(2 * CS, CS).allocated
    check(top)


def test_full_read_makes_top_self_contained(tmp_path: Path) -> None:
    top, content = chain(tmp_path)
    with rig.open({"driver": "copy-on-read", "file": qcow2(top)}) as blk:
        assert_same(blk.pread(0, SIZE), bytes(content))
    with open_qcow2(top, backing=None) as own:
        assert_same(own.pread(0, SIZE), bytes(content))
        pos = 0
        while pos < SIZE:
            st = own.block_status(pos, SIZE - pos)
            assert st.allocated
            pos += st.length
    check(top)


def test_bottom_limits_copying(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(pattern(2, SIZE))
    mid = tmp_path / "mid.qcow2"
    create(mid, SIZE, cluster_size=CS, backing="base.raw", backing_fmt="raw")
    with open_qcow2(mid) as blk:
        blk.pwrite(3 * CS, pattern(3, CS))
    top = tmp_path / "top.qcow2"
    create(top, SIZE, cluster_size=CS, backing="mid.qcow2", backing_fmt="qcow2")
    spec = {"driver": "copy-on-read", "bottom": "mid",
            "file": qcow2(top, backing=qcow2(mid, **{"node-name": "mid"}))}
    with rig.open(spec) as blk:
        assert_same(blk.pread(0, CS), pattern(2, CS))          # only in base: not copied
        assert_same(blk.pread(3 * CS, CS), pattern(3, CS))     # in mid: copied
        assert not blk.block_status(0, CS).allocated
        assert blk.block_status(3 * CS, CS).allocated
    with pytest.raises(ConfigError, match="not a backing image"):
        rig.open({**spec, "bottom": "nowhere"})


def test_read_only_image_refused(tmp_path: Path) -> None:
    top, _ = chain(tmp_path)
    with pytest.raises(ConfigError, match="writable"):
        rig.open({"driver": "copy-on-read", "file": {**qcow2(top), "read-only": True}})


def test_guest_writes_racing_copies_are_kept(tmp_path: Path) -> None:
    """Readers copy while writers write the same clusters: every write survives."""
    top, content = chain(tmp_path)
    writes = [(i * 7919 % (SIZE - 600), 600, i) for i in range(60)]
    with rig.open({"driver": "copy-on-read", "file": qcow2(top)}) as blk:
        stop = threading.Event()

        def reader() -> None:
            while not stop.is_set():
                for off in range(0, SIZE, 3 * 4096 + 100):
                    blk.pread(off, 5000 if off + 5000 <= SIZE else SIZE - off)

        readers = [threading.Thread(target=reader) for _ in range(2)]
        for t in readers:
            t.start()
        try:
            for off, n, seed in writes:
                blk.pwrite(off, pattern(seed, n))
                content[off:off + n] = pattern(seed, n)
        finally:
            stop.set()
            for t in readers:
                t.join()
        assert_same(blk.pread(0, SIZE), bytes(content))
    with open_qcow2(top) as again:
        assert_same(again.pread(0, SIZE), bytes(content))
    check(top)


class CopyOnReadMachine(Qcow2Machine):
    """The qcow2 workloads through a copy-on-read filter: reads copy the backing data up, and
    the content stays what the model says (and qemu-img check stays clean)."""

    def wrap(self, spec: dict[str, Any]) -> dict[str, Any]:
        return {"driver": "copy-on-read", "file": spec}


TestCopyOnReadModel = CopyOnReadMachine.TestCase
TestCopyOnReadModel.settings = settings(profiles.selected(), max_examples=20,
                                        stateful_step_count=20)
