"""``BlockBackend.direct`` and ``Node.direct``: which requests may bypass the graph (the export's
direct path), and that a node that lets one through does exactly what the request would have
done on the way down (a filter numbers it, a write counts for the next flush), and nothing when
it does not."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

import rig
from rig.faults.rules import Error, Rule
from rig.filters.faults import FaultsFilter

MiB = 1 << 20


def _image(tmp_path: Path, size: int = MiB) -> str:
    img = tmp_path / "disk.img"
    img.write_bytes(b"")
    os.truncate(img, size)
    return str(img)


def _file(tmp_path: Path) -> dict[str, Any]:
    return {"driver": "file", "filename": _image(tmp_path)}


def test_a_file_node_gives_its_descriptor_and_counts_a_write(tmp_path: Path) -> None:
    with rig.open(_file(tmp_path)) as blk:
        leaf = blk.root
        plan = blk.direct(False, 8192, 4096)
        assert plan is not None
        assert plan[:3] == (leaf, leaf.fd, 8192)  # type: ignore[attr-defined]
        assert plan[3] is None  # a read is not tracked
        gen = leaf.write_gen
        wplan = blk.direct(True, 8192, 4096)
        assert wplan is not None and wplan[3] is not None  # a write is tracked until it ends
        assert leaf.write_gen == gen + 1  # so the next flush is not skipped as clean
        assert blk.tracker.in_flight() == 1
        blk.direct_done(True, 8192, 4096, 0, wplan[3])
        assert blk.tracker.in_flight() == 0
        assert blk.stats.by_op["write"].ops == 1
        assert blk.stats.wr_highest_offset == 8192 + 4096


def test_a_raw_window_maps_the_offset_and_counts_the_write_at_both_nodes(
        tmp_path: Path) -> None:
    spec = {"driver": "raw", "offset": 65536, "file": _file(tmp_path)}
    with rig.open(spec) as blk:
        raw, leaf = blk.root, blk.root.primary_child
        assert leaf is not None
        gens = raw.write_gen, leaf.write_gen
        plan = blk.direct(True, 4096, 4096)
        assert plan is not None and plan[2] == 65536 + 4096
        assert (raw.write_gen, leaf.write_gen) == (gens[0] + 1, gens[1] + 1)
        blk.direct_done(True, 4096, 4096, 0, plan[3])


def test_nothing_passes_an_event_listener_below_raw(tmp_path: Path) -> None:
    """raw emits read_aio/write_aio to blkdebug below it: such requests go down the graph."""
    spec = {"driver": "raw", "file": {"driver": "blkdebug", "image": _file(tmp_path)}}
    with rig.open(spec) as blk:
        assert blk.direct(False, 0, 4096) is None
        assert blk.direct(True, 0, 4096) is None
        assert blk.tracker.in_flight() == 0


def test_faults_lets_through_only_what_no_rule_can_match_and_numbers_it_once(
        tmp_path: Path) -> None:
    with rig.open({"driver": "faults", "file": _file(tmp_path)}) as blk:
        f = blk.root
        assert isinstance(f, FaultsFilter)
        f.add_rule(Rule(Error("EIO"), name="bad", op="read", start=65536, end=69632))
        assert blk.direct(False, 65536, 4096) is None  # the rule's range: the graph decides
        assert f.seq == 0  # and nothing was numbered
        assert blk.direct(False, 0, 4096) is not None
        assert f.seq == 1
        assert blk.direct(True, 65536, 4096) is not None  # a read rule: writes pass
        assert f.seq == 2
        with pytest.raises(OSError):
            blk.preadv(65536, [bytearray(4096)])
        assert f.seq == 3 and f.counters()["bad"] == 1
        f.add_rule(Rule(Error("EIO"), name="every", op="read"))  # no range: every read
        assert blk.direct(False, 0, 4096) is None
        assert f.seq == 3


def test_the_backend_keeps_what_needs_its_own_steps(tmp_path: Path) -> None:
    img = _image(tmp_path)
    with rig.open({"driver": "file", "filename": img}, cache="none") as blk:
        align = blk.limits.request_alignment
        assert align >= 512
        assert blk.direct(False, align // 2, align) is None  # unaligned: bounce buffer
        assert blk.direct(False, MiB - 4096, 8192) is None  # past the end
        blk.pause()
        assert blk.direct(False, 0, 4096) is None  # stopped: requests wait
        blk.resume()
        assert blk.direct(False, 0, 4096) is not None
        blk.add_dirty_bitmap()
        assert blk.direct(True, 0, 4096) is None  # the bitmap must see the write
        assert blk.direct(False, 0, 4096) is not None
    with rig.open({"driver": "file", "filename": img}, read_only=True) as blk:
        assert blk.direct(True, 0, 4096) is None
    with rig.open({"driver": "file", "filename": img}, cache="writethrough") as blk:
        assert blk.direct(True, 0, 4096) is None  # every write carries FUA there
    with rig.open({"driver": "file", "filename": img}) as blk:
        held = blk.tracker.begin(0, 8192, serialising=True)  # a read-modify-write in flight
        assert blk.direct(True, 4096, 4096) is None
        assert blk.direct(True, 8192, 4096) is not None  # not overlapping it
        blk.tracker.end(held)


def test_formats_and_other_filters_keep_their_requests(tmp_path: Path) -> None:
    img = tmp_path / "q.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "1M"], check=True)
    with rig.open({"driver": "qcow2", "file": {"driver": "file",
                                               "filename": str(img)}}) as blk:
        assert blk.direct(False, 0, 4096) is None
    spec = {"driver": "throttle", "limits": {"iops-total": 1000}, "file": _file(tmp_path)}
    with rig.open(spec) as blk:
        assert blk.direct(False, 0, 4096) is None


def test_a_short_direct_read_is_finished_by_the_leaf(tmp_path: Path) -> None:
    """A file that ends inside the last sector: the read comes back short and the rest reads
    as zeroes, as the file node's own read does."""
    img = tmp_path / "odd.img"
    img.write_bytes(b"\x5a" * 1000)
    with rig.open({"driver": "raw", "file": {"driver": "file", "filename": str(img)}}) as blk:
        assert blk.getlength() == 1024
        plan = blk.direct(False, 512, 512)
        assert plan is not None
        leaf, fd, file_offset, tracked = plan
        buf = bytearray(512)
        done = os.preadv(fd, [buf], file_offset)
        assert done == 488
        blk.direct_failed(False, 512, [memoryview(buf)], 0, tracked, leaf, file_offset, done,
                          None)
        assert bytes(buf) == b"\x5a" * 488 + bytes(24)
        assert blk.stats.by_op["read"].ops == 1


def test_a_failed_direct_request_meets_the_error_policy(tmp_path: Path) -> None:
    with rig.open(_file(tmp_path), on_write_error="report") as blk:
        plan = blk.direct(True, 0, 4096)
        assert plan is not None
        leaf, _, file_offset, tracked = plan
        with pytest.raises(OSError) as e:
            blk.direct_failed(True, 0, [memoryview(bytearray(4096))], 0, tracked, leaf,
                              file_offset, 0, OSError(5, "Input/output error"))
        assert e.value.errno == 5
        assert blk.stats.by_op["write"].failed == 1
        assert blk.tracker.in_flight() == 0
    with rig.open(_file(tmp_path), on_read_error="ignore") as blk:
        # ignore: the failed read succeeds for the caller, and counts as failed.
        plan = blk.direct(False, 0, 4096)
        assert plan is not None
        blk.direct_failed(False, 0, [memoryview(bytearray(4096))], 0, plan[3], plan[0],
                          plan[2], 0, OSError(5, "Input/output error"))
        assert blk.stats.by_op["read"].failed == 1
