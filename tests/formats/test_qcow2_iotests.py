"""qcow2 behaviour that QEMU 7.2's iotests check, side by side with qemu-io 7.2 on copies of the
same image: blkdebug events at QEMU's points and the error paths after them (iotest 026: the
request's error, "Failed to flush the L2 table cache" at close, an image ``qemu-img check``
finds clean but for leaks), ``write -b`` (the VM state area past the disk, growing the L1 table),
zero clusters from ``write -z`` (179), discard on a v2 image over a backing file (290), and an
unaligned refcount block found when used (305)."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from tests.cli.helpers import Result, normalise, qemu_io, rig_io
from tests.formats.helpers import run

pytestmark = pytest.mark.rig_needs("qemu_utils")

#: rig io prints QEMU's program name in its messages, as under the iotests' wrapper.
ENV = {"RIG_IO_NAME": "qemu-io"}


def both(tmp: Path, make: list[str], args: list[str], conf: str | None = None,
         prepare: list[str] | None = None) -> tuple[Result, Result, Path, Path]:
    """``qemu-img create <make>`` twice, ``prepare`` commands with qemu-io on each, then
    ``args`` under qemu-io and rig io (``IMG`` in them is the image, ``blkdebug:CONF:IMG``
    when ``conf`` is given)."""
    out = []
    for tool in ("qemu", "rig"):
        img = tmp / f"{tool}.qcow2"
        run("qemu-img", "create", "-q", "-f", "qcow2", *make[:-1], img, make[-1])
        if prepare:
            run("qemu-io", "-f", "qcow2", *[x for c in prepare for x in ("-c", c)], img)
        target = str(img)
        if conf is not None:
            (tmp / "blkdebug.conf").write_text(conf)
            target = f"blkdebug:{tmp / 'blkdebug.conf'}:{img}"
        full = [a.replace("IMG", target) for a in args]
        res = qemu_io(*full) if tool == "qemu" else rig_io(*full, env=ENV)
        out.append((res, img))
    (q, qimg), (r, rimg) = out
    return q, r, qimg, rimg


def same(q: Result, r: Result) -> None:
    assert (r.rc, normalise(r.out), r.err) == (q.rc, normalise(q.out), q.err)


def check(img: Path) -> str:
    """``qemu-img check``, leaks allowed (iotest 026's _check_test_img_ignore_leaks)."""
    proc = run("qemu-img", "check", "-f", "qcow2", img, check=False)
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    assert "ERROR" not in proc.stdout, proc.stdout
    return proc.stdout


def conf(event: str, errno: int, once: str) -> str:
    return (f'[inject-error]\nevent = "{event}"\nerrno = "{errno}"\nimmediately = "off"\n'
            f'once ="{once}"\n')


# (event, errno, once, -b or not): a sample of iotest 026's first table, each case its own
# image (1 KiB clusters, 1 GiB), ``write 0 128k`` through blkdebug under writethrough
CASES = [
    ("l1_update", 5, "off", ""),
    ("l2_update", 28, "on", ""),
    ("l2_update", 5, "off", "-b"),
    ("l2_alloc_write", 5, "off", ""),
    ("write_aio", 28, "off", "-b"),
    ("refblock_load", 5, "on", ""),
    ("refblock_update_part", 28, "off", ""),
    ("refblock_alloc", 5, "off", "-b"),
    ("cluster_alloc", 5, "off", ""),
]


@pytest.mark.parametrize("event,errno,once,vm", CASES)
def test_026_event_errors(tmp_path: Path, event: str, errno: int, once: str, vm: str) -> None:
    prepare = [f"write {vm} 0 512"] if event == "l2_update" else None
    q, r, _qimg, rimg = both(tmp_path, ["-o", "cluster_size=1024", "1G"],
                            ["-t", "writethrough", "-f", "qcow2", "-c", f"write {vm} 0 128k",
                             "IMG"], conf(event, errno, once), prepare)
    same(q, r)
    assert "write failed" in r.out
    check(rimg)


def test_026_l2_load_then_read(tmp_path: Path) -> None:
    """The first write loads nothing; the next write and a read fail when the L2 table is
    loaded."""
    q, r, qimg, rimg = both(tmp_path, ["-o", "cluster_size=1024", "1G"],
                            ["-t", "writethrough", "-f", "qcow2", "-c", "write 0 128k", "IMG"],
                            conf("l2_load", 5, "on"))
    same(q, r)
    for args in (["-c", "write 0 128k"], ["-c", "read 0 128k"]):
        full = ["-t", "writethrough", "-f", "qcow2", *args]
        conf_path = tmp_path / "blkdebug.conf"
        same(qemu_io(*full, f"blkdebug:{conf_path}:{qimg}"),
             rig_io(*full, f"blkdebug:{conf_path}:{rimg}", env=ENV))
    check(rimg)


@pytest.mark.parametrize("event,once", [("refblock_alloc_hookup", "off")])
def test_026_refcount_table_growth(tmp_path: Path, event: str, once: str) -> None:
    """512-byte clusters: a 64 MiB write needs new refcount blocks and a larger table."""
    q, r, _qimg, rimg = both(tmp_path, ["-o", "cluster_size=512", "1G"],
                            ["-t", "writethrough", "-f", "qcow2", "-c", "write 0 64M", "IMG"],
                            conf(event, 28, once))
    same(q, r)
    check(rimg)


@pytest.mark.parametrize("event", ["l1_grow_alloc_table", "l1_grow_write_table",
                                   "l1_grow_activate_table"])
def test_026_l1_growth(tmp_path: Path, event: str) -> None:
    """VM state lives past the disk: the L1 table grows for it."""
    q, r, _qimg, rimg = both(tmp_path, ["-o", "cluster_size=1024", "1G"],
                            ["-t", "writethrough", "-f", "qcow2", "-c", "write -b 0 64k",
                             "IMG"], conf(event, 5, "off"))
    same(q, r)
    check(rimg)


def test_vmstate_round_trip(tmp_path: Path) -> None:
    """What rig io saves as VM state, qemu-io loads, and the other way round; the image checks
    clean and its guest data is untouched."""
    q, r, qimg, rimg = both(tmp_path, ["-o", "cluster_size=1024", "1G"],
                            ["-f", "qcow2", "-c", "write -b -P 0x5a 512 64k",
                             "-c", "write -P 0x11 0 4k", "-c", "write -b -P 0x6b 1M 4k",
                             "IMG"])
    same(q, r)
    for img, reader in ((rimg, qemu_io), (qimg, rig_io)):
        res = reader("-f", "qcow2", "-c", "read -b -P 0x5a 512 64k", "-c", "read -b -P 0x6b 1M 4k",
                     "-c", "read -b -P 0 0 512", "-c", "read -P 0x11 0 4k", "-c",
                     "read -P 0 4k 4k", str(img))
        assert "fail" not in res.out and res.rc == 0, res.out + res.err
        assert "No errors were found" in check(img)


def test_write_zeroes_makes_zero_clusters(tmp_path: Path) -> None:
    """iotest 179's first steps: ``write -z`` leaves zero clusters, partial clusters too when
    the rest of them reads as zeroes; ``map`` shows them allocated."""
    script = ["write -z -u 2M 2M", "write -z 6M 2M", "write -z -u 10485761 2097150",
              "write -z 14680065 2097150", "write 18M 4M", "write -z -u 19M 1M",
              "write -z 20M 1M", "write -z 23M 1k", "map"]
    q, r, qimg, rimg = both(tmp_path, ["64M"],
                            ["-f", "qcow2", *[x for c in script for x in ("-c", c)], "IMG"])
    same(q, r)
    assert "allocated at offset 2 MiB" in r.out
    qmap = run("qemu-img", "map", "--output=json", qimg).stdout
    assert run("qemu-img", "map", "--output=json", rimg).stdout.replace(
        str(rimg), "IMG") == qmap.replace(str(qimg), "IMG")
    check(rimg)


def test_discard_v2_over_backing_keeps_data(tmp_path: Path) -> None:
    """iotest 290: compat=0.10 has no zero flag, so discarding over a backing file does nothing
    (the backing data would show)."""
    base = tmp_path / "base.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", base, "128k")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0xff 0 128k", base)
    q, r, _qimg, _rimg = both(tmp_path, ["-o", "compat=0.10", "-b", str(base), "-F", "qcow2",
                                       "128k"],
                            ["-f", "qcow2", "-c", "write -P 1 0 128k", "-c", "discard 0 128k",
                             "-c", "read -P 1 0 128k", "IMG"])
    same(q, r)
    assert "Pattern verification failed" not in r.out


def test_unaligned_refcount_block_is_found_when_used(tmp_path: Path) -> None:
    """iotest 305: QEMU opens an image whose second refcount block is unaligned and marks it
    corrupt when an allocation reaches that block; the rig does the same, in QEMU's words."""
    for tool in ("qemu", "rig"):
        img = tmp_path / f"{tool}.qcow2"
        run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "refcount_bits=64,cluster_size=1k",
            img, "1M")
        run("qemu-io", "-f", "qcow2", "-c", "write 0 124k", "-c", "discard 121k 1k",
            "-c", "discard 123k 1k", img)
        data = bytearray(img.read_bytes())
        reftable = struct.unpack_from(">Q", data, 48)[0]
        data[reftable + 14] = 6
        img.write_bytes(bytes(data))
    args = ["-f", "qcow2", "-c", "write 121k 3k"]
    q = qemu_io(*args, str(tmp_path / "qemu.qcow2"))
    r = rig_io(*args, str(tmp_path / "rig.qcow2"), env=ENV)
    same(q, r)
    assert "Refblock offset 0x20600 unaligned (reftable index: 0x1)" in r.err


def test_preallocated_zero_clusters_are_reused(tmp_path: Path) -> None:
    """iotest 066: data over preallocated zero clusters goes in place, and host-contiguous
    in-place clusters are one write (one write_aio: a rule armed by the first one fails
    nothing); the image's map does not change."""
    maps = []
    for tool in ("qemu", "rig"):
        img = tmp_path / f"{tool}.qcow2"
        run("qemu-img", "create", "-q", "-f", "qcow2", img, "192k")
        run("qemu-io", "-f", "qcow2", "-c", "write -P 42 0 192k", img)
        before = run("qemu-img", "map", "--output=json", img).stdout
        run("qemu-io", "-f", "qcow2", "-c", "write -z 64k 64k", img)
        spec = ("json:{'driver': 'qcow2', 'file': {'driver': 'blkdebug', 'image.filename': "
                f"'{img}', 'set-state': [{{'event': 'write_aio', 'new_state': 2}}], "
                "'inject-error': [{'event': 'write_aio', 'state': 2}]}}")
        args = ["-c", "write -P 23 0 192k", "-c", "read -P 23 0 192k", spec]
        res = qemu_io(*args) if tool == "qemu" else rig_io(*args, env=ENV)
        assert "fail" not in res.out and res.rc == 0, res.out + res.err
        check(img)
        after = run("qemu-img", "map", "--output=json", img).stdout
        assert after == before
        maps.append(after.replace(str(img), "IMG"))
    assert maps[1] == maps[0]


def test_discard_cut_by_blkdebug_limits_keeps_whole_clusters(tmp_path: Path) -> None:
    """iotest 177/204's non-power-of-2 limits: a discard through blkdebug with
    ``opt-discard=max-discard`` of 15 clusters is cut at multiples of 15 clusters (QEMU's
    bdrv_co_pdiscard), so every cluster wholly inside it becomes a zero cluster over the
    backing file; a zero write is cut at multiples of ``opt-write-zero`` and the pieces
    blkdebug refuses are written as zeroes (bdrv_co_do_pwrite_zeroes). The images' maps are
    the same as after qemu-io."""
    base = tmp_path / "base.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", base, "8M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 11 0 8M", base)
    lim = ("align=512,opt-discard=960k,max-discard=960k,opt-write-zero=960k,"
           "max-write-zero=960k")
    q, r, qimg, rimg = both(
        tmp_path, ["-b", str(base), "-F", "qcow2", "8M"],
        ["-c", f"open -o driver=blkdebug,image.driver=qcow2,{lim} blkdebug::IMG",
         "-c", "discard 1000001 1920k", "-c", "read -P 0 1024k 1856k",
         "-c", "write -z 4M 2M", "-c", "read -P 0 4M 2M"],
        prepare=["write -P 22 0 8M"])
    same(q, r)
    assert "Pattern verification failed" not in r.out
    maps = [run("qemu-img", "map", "--output=json", i).stdout.replace(str(i), "IMG")
            for i in (qimg, rimg)]
    assert maps[1] == maps[0]


def test_backing_options_merge_with_the_header(tmp_path: Path) -> None:
    """iotest 133: ``backing.node-name=foo`` (or another backing option without a file) opens
    the header's backing file with it, as QEMU's bdrv_open_backing_file; reopen keeps it."""
    base = tmp_path / "base.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
    script = ["open -o backing.node-name=foo IMG", "reopen -o backing.node-name=foo",
              "reopen", "reopen -o backing.node-name=bar", "close",
              "open -o backing.driver=raw IMG", "info", "close",
              "open -o backing.read-only=on,backing.node-name=x IMG", "read 0 4k"]
    q, r, _qimg, _rimg = both(tmp_path, ["-b", str(base), "-F", "qcow2", "1M"],
                              [x for c in script for x in ("-c", c)])
    same(q, r)
    assert "Cannot change the option 'node-name'" in r.err


def test_discarded_clusters_are_allocated_again(tmp_path: Path) -> None:
    """iotest 250: the host clusters a discard frees are what the next writes get, as QEMU's
    free_cluster_index (the same map as qemu-io's, offsets included), and the image checks
    clean."""
    q, r, qimg, rimg = both(tmp_path, ["-o", "cluster_size=64k,preallocation=metadata", "64M"],
                            ["-f", "qcow2", "-c", "discard 0 1M", "-c", "discard 63M 1M",
                             "-c", "write 63M 1M", "-c", "write 0 1M", "-c", "write 32M 64k",
                             "IMG"])
    same(q, r)
    maps = [run("qemu-img", "map", "--output=json", "-f", "qcow2", img).stdout
            for img in (qimg, rimg)]
    assert maps[1] == maps[0]
    at = {e["start"]: e.get("offset") for e in json.loads(maps[1])}
    assert at[63 << 20] < 1 << 20  # guest 63M went where guest 0's clusters were
    check(rimg)


def test_cow_write_stops_at_write_aio(tmp_path: Path) -> None:
    """iotest 046: a partial write over backing data emits write_aio before its merged
    copy-on-write (QEMU's perform_cow), so a break there suspends it; requests to the same
    cluster wait, and the image ends as qemu-io leaves it."""
    base = tmp_path / "base.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 5 0 1M", base)
    script = ("break write_aio A\naio_write -P 10 0x18000 0x2000\nwait_break A\n"
              "aio_write -P 11 0x12000 0x2000\naio_write -P 12 0x1c000 0x2000\n"
              "resume A\naio_flush\nbreak write_aio B\naio_write -P 20 0x28000 0x2000\n"
              "wait_break B\naio_write -P 21 0x2a000 0x10000\nresume B\naio_flush\n")
    imgs, outs = [], []
    for tool in ("qemu", "rig"):
        img = tmp_path / f"{tool}.qcow2"
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", img, "1M")
        res = (qemu_io(f"blkdebug::{img}", stdin=script) if tool == "qemu"
               else rig_io(f"blkdebug::{img}", stdin=script, env=ENV))
        imgs.append(img)
        outs.append(res)
    # the prompts interleave with the asynchronous output, and the waiting requests may end in
    # either order: the iotest filters both out
    q, r = (Result(o.rc, re.sub(r"\d+/\d+ bytes at offset \d+", "XXX/XXX bytes at offset XXX",
                                o.out.replace("qemu-io> ", "")), o.err) for o in outs)
    same(q, r)
    assert r.out.count("blkdebug: Suspended request") == 2
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", *imgs)
    check(imgs[1])
