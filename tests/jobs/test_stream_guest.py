"""Guest writes during a stream: a write overlapping the chunk being copied waits for the copy
(serialising tracked request) and is never overwritten by older backing data; one elsewhere
goes on. A blkdebug breakpoint holds the job in the middle of its copy to make this
deterministic."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import rig
from rig.filters.blkdebug import BlkdebugFilter
from rig.jobs import StreamJob
from tests.formats.helpers import check_clean, compare_raw, run
from tests.jobs.chains import backing_file

pytestmark = [pytest.mark.rig_needs("qemu_utils"), pytest.mark.timeout(60)]
MiB = 1 << 20


def _chain(tmp: Path) -> Path:
    base = tmp / "base.raw"
    base.write_bytes(b"\x11" * (2 * MiB))
    conf = tmp / "none.conf"
    conf.write_text("")
    top = tmp / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", f"blkdebug:{conf}:{base}",
        "-F", "raw", top, "2M")
    return top


def _top_spec(top: Path) -> dict[str, object]:
    """The top image over a blkdebug node (no rules): the copy-on-read filter's ``cor_write``
    event, fired after the copy read the chain and before it writes the top, reaches it."""
    return {"driver": "qcow2", "file": {"driver": "blkdebug", "image": {
        "driver": "file", "filename": str(top)}}}


def _blkdebugs(blk: rig.BlockBackend) -> list[BlkdebugFilter]:
    """The blkdebug nodes of the graph, the top's own first."""
    return [n for n in blk.root.walk() if isinstance(n, BlkdebugFilter)]


@pytest.mark.parametrize("verb", ["write", "discard"])
@pytest.mark.parametrize(("offset", "waits"), [(4096, True), (MiB + 4096, False)])
def test_overlapping_guest_write_waits_for_the_copy(tmp_path: Path, offset: int,
                                                    waits: bool, verb: str) -> None:
    """The job is held between reading chunk 0 from the chain and writing it into the top: a
    guest write or discard into that chunk waits (else the copy would overwrite it with old
    data), one elsewhere completes. A discarded cluster of a top with a backing file reads as
    zeroes afterwards (qcow2 v3 makes it a zero cluster)."""
    top = _chain(tmp_path)
    with rig.open(_top_spec(top)) as blk:
        dbg = _blkdebugs(blk)[0]
        dbg.set_breakpoint("cor_write", "copy")
        job = StreamJob(blk)
        job.start()
        guest = (threading.Thread(target=blk.pwrite, args=(offset, b"\x99" * 4096))
                 if verb == "write" else
                 threading.Thread(target=blk.discard, args=(offset - 4096, 65536)))
        try:
            assert dbg.wait_break("copy", 10), "the job never copied"
            assert job.offset == 0
            guest.start()
            guest.join(0.3)
            assert guest.is_alive() == waits
        finally:
            dbg.resume("copy")
        guest.join(10)
        assert not guest.is_alive()
        assert job.wait(30) is None
    want = bytearray(b"\x11" * (2 * MiB))
    if verb == "write":
        want[offset:offset + 4096] = b"\x99" * 4096
    else:
        want[offset - 4096:offset - 4096 + 65536] = bytes(65536)
    check_clean(top)
    assert backing_file(top) is None
    compare_raw(top, bytes(want), tmp_path)


def test_guest_reads_see_the_chain_while_streaming(tmp_path: Path) -> None:
    """Reads during the job (held in its first copy) return the chain's data."""
    top = _chain(tmp_path)
    with rig.open(_top_spec(top)) as blk:
        dbg = _blkdebugs(blk)[0]
        dbg.set_breakpoint("cor_write", "copy")
        job = StreamJob(blk)
        job.start()
        try:
            assert dbg.wait_break("copy", 10)
            assert blk.pread(0, 4096) == b"\x11" * 4096
            assert blk.pread(MiB, 4096) == b"\x11" * 4096
        finally:
            dbg.resume("copy")
        assert job.wait(30) is None
        assert blk.pread(0, 2 * MiB) == b"\x11" * (2 * MiB)
