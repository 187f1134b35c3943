"""The export's direct path (``drivers/export/direct.py``) under real programs: plain reads and
writes take it and land where the graph would put them, counted once by the statistics and the
faults filter; a rule armed mid-run takes its range off it at once; a short read is finished and
a failed write meets the error policy (``stop``, then ``cont``) as in the graph, whether the
reader did it at once (a lone request) or native AIO did; a lone request is done at once, a
crowd goes by native AIO."""

from __future__ import annotations

import mmap
import os
import random
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import rig
from rig.drivers.export import export
from rig.faults.rules import Delay, Error, Rule
from rig.filters.faults import FaultsFilter

pytestmark = pytest.mark.rig_needs("loop", "fuse")

MiB = 1 << 20


def _image(tmp_path: Path, size: int = 4 * MiB) -> Path:
    img = tmp_path / "disk.img"
    img.write_bytes(b"")
    os.truncate(img, size)
    return img


def _dd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["dd", *args, "status=none"], capture_output=True, text=True,
                          timeout=60)


def _wait(cond: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_plain_requests_take_the_direct_path_counted_once(tmp_path: Path) -> None:
    img = _image(tmp_path)
    spec = {"driver": "faults", "file": {"driver": "file", "filename": str(img)}}
    rng = random.Random(7)
    blocks = rng.sample(range(1024), 64)
    with rig.open(spec, cache="none") as blk, export(blk) as ex:
        direct = ex.operations.direct
        assert direct is not None
        f = blk.root
        assert isinstance(f, FaultsFilter)
        buf = mmap.mmap(-1, 4096)
        fd = os.open(ex.path, os.O_RDWR | os.O_DIRECT)
        try:
            for b in blocks:
                buf[:] = bytes([b % 251 + 1]) * 4096
                assert os.pwrite(fd, buf, b * 4096) == 4096
            for b in blocks:
                assert os.preadv(fd, [buf], b * 4096) == 4096
                assert buf[:] == bytes([b % 251 + 1]) * 4096
            served = direct.served
            assert served >= 128  # every one of them, besides what udev or blkid read
            # A rule armed now takes its range off the direct path from the next request on.
            f.add_rule(Rule(Error("EIO"), name="bad", op="read", start=blocks[0] * 4096,
                            end=blocks[0] * 4096 + 4096))
            with pytest.raises(OSError):
                os.preadv(fd, [buf], blocks[0] * 4096)
            assert f.counters()["bad"] == 1
            assert os.preadv(fd, [buf], blocks[1] * 4096) == 4096
            assert direct.served == served + 1
        finally:
            os.close(fd)
        stats = blk.stats.by_op
        # Every request got exactly one number, the direct ones included (closing the device
        # flushes it: a flush is a request too).
        assert f.seq == sum(stats[op].ops + stats[op].failed for op in ("read", "write", "flush"))
        assert stats["write"].ops >= 64 and stats["read"].ops >= 65
    data = img.read_bytes()
    for b in blocks:
        assert data[b * 4096:(b + 1) * 4096] == bytes([b % 251 + 1]) * 4096


def test_a_short_read_reads_zeroes_past_the_end_of_the_file(tmp_path: Path) -> None:
    img = tmp_path / "odd.img"
    img.write_bytes(os.urandom(MiB) + b"\x77" * 100)
    spec = {"driver": "raw", "file": {"driver": "file", "filename": str(img)}}
    with rig.open(spec) as blk, export(blk) as ex:
        direct = ex.operations.direct
        assert direct is not None
        before = direct.handed_back
        out = tmp_path / "last.bin"
        r = _dd(f"if={ex.path}", f"of={out}", "bs=512", "skip=2048", "count=1", "iflag=direct")
        assert r.returncode == 0, r.stderr
        assert out.read_bytes() == b"\x77" * 100 + bytes(412)
        assert direct.handed_back > before


@pytest.mark.parametrize("at_once", [True, False], ids=["done-at-once", "native-aio"])
def test_a_failed_direct_write_stops_then_lands_after_cont(tmp_path: Path, at_once: bool) -> None:
    """The image's descriptor is swapped for a read-only one: the direct write fails (EBADF), the
    ``stop`` policy parks it; with the descriptor back, ``cont`` runs it again through the graph
    and the program's write succeeds. Both ways a direct write is made: by the reader at once
    (the only request) and by native AIO."""
    img = _image(tmp_path)
    data = tmp_path / "data.bin"
    data.write_bytes(b"\xc3" * 4096)
    with rig.open({"driver": "file", "filename": str(img)}, on_write_error="stop") as blk, \
            export(blk) as ex:
        direct = ex.operations.direct
        assert direct is not None
        if not at_once:
            direct.watch(None)
        at_once_before = direct.done_at_once
        leaf_fd = blk.root.fd  # type: ignore[attr-defined]
        saved = os.dup(leaf_fd)
        ro = os.open(img, os.O_RDONLY)
        os.dup2(ro, leaf_fd)
        os.close(ro)
        try:
            writer = subprocess.Popen(["dd", f"if={data}", f"of={ex.path}", "bs=4096",
                                       "seek=5", "count=1", "oflag=direct", "status=none"],
                                      stderr=subprocess.PIPE, text=True)
            _wait(lambda: blk.parked == 1, "the failed write to be parked")
            assert blk.paused and direct.handed_back >= 1
            assert (direct.done_at_once > at_once_before) == at_once
            assert blk.stats.by_op["write"].failed == 1
            assert writer.poll() is None  # the program waits, as a stopped guest's disk
        finally:
            os.dup2(saved, leaf_fd)
            os.close(saved)
        blk.resume()
        assert writer.wait(timeout=30) == 0, writer.communicate()[1]
    assert img.read_bytes()[5 * 4096:6 * 4096] == b"\xc3" * 4096


def test_direct_requests_pass_a_request_held_in_the_graph(tmp_path: Path) -> None:
    """With one graph worker (``threads=1``), a read the graph holds (a 3 s ``delay`` rule)
    holds up no read the graph passes through: those never wait for a worker."""
    img = _image(tmp_path)
    spec = {"driver": "faults", "file": {"driver": "file", "filename": str(img)}}
    with rig.open(spec, cache="none") as blk, export(blk, threads=1) as ex:
        f = blk.root
        assert isinstance(f, FaultsFilter)
        f.add_rule(Rule(Delay(3.0), name="slow", op="read", start=0, end=4096))
        held = subprocess.Popen(["dd", f"if={ex.path}", "of=/dev/null", "bs=4096", "count=1",
                                 "iflag=direct", "status=none"])
        try:
            _wait(lambda: f.counters().get("slow", 0) == 1, "the held read to reach the rule")
            start = time.monotonic()
            r = _dd(f"if={ex.path}", "of=/dev/null", "bs=4096", "skip=100", "count=1",
                    "iflag=direct")
            assert r.returncode == 0, r.stderr
            assert time.monotonic() - start < 1.5  # not after the held one's 3 s
            assert held.poll() is None  # still held
        finally:
            assert held.wait(timeout=30) == 0


def test_a_lone_request_is_done_at_once_and_a_crowd_goes_by_native_aio(tmp_path: Path) -> None:
    """One request at a time (dd, queue depth 1): the reader does each itself (``pwrite``,
    ``pread``). Sixteen threads at once: requests find others waiting or in flight and go by
    native AIO. Every byte lands either way."""
    img = _image(tmp_path)
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(64 * 4096))
    with rig.open({"driver": "file", "filename": str(img)}, cache="none") as blk, \
            export(blk) as ex:
        direct = ex.operations.direct
        assert direct is not None
        at_once, served = direct.done_at_once, direct.served
        writes, reads = blk.stats.by_op["write"].ops, blk.stats.by_op["read"].ops
        r = _dd(f"if={src}", f"of={ex.path}", "bs=4096", "count=64", "oflag=direct")
        assert r.returncode == 0, r.stderr
        back = tmp_path / "back.bin"
        r = _dd(f"if={ex.path}", f"of={back}", "bs=4096", "count=64", "iflag=direct")
        assert r.returncode == 0, r.stderr
        assert back.read_bytes() == src.read_bytes()
        # dd's 128 (a probe by udev or blkid after the write may meet a few of them in flight).
        assert direct.done_at_once - at_once >= 96
        # Answered first, accounted right after: each counted once all the same.
        assert blk.stats.by_op["write"].ops - writes == 64
        assert blk.stats.by_op["read"].ops - reads >= 64

        at_once, served = direct.done_at_once, direct.served
        errors: list[BaseException] = []

        def worker(n: int) -> None:
            buf = mmap.mmap(-1, 4096)
            fd = os.open(ex.path, os.O_RDWR | os.O_DIRECT)
            try:
                for i in range(200):
                    block = 64 + (n * 200 + i) % 960
                    buf[:8] = block.to_bytes(8, "little")
                    os.pwrite(fd, buf, block * 4096)
                    os.preadv(fd, [buf], block * 4096)
                    assert buf[:8] == block.to_bytes(8, "little")
            except BaseException as e:
                errors.append(e)
            finally:
                os.close(fd)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        by_aio = (direct.served - served) - (direct.done_at_once - at_once)
        assert by_aio > 3200  # of 6,400: most found company (6,380-6,397 measured)
    assert img.read_bytes()[:64 * 4096] == src.read_bytes()
