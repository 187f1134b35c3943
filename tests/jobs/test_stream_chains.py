"""Streaming hypothesis-generated chains (2 to 4 layers, made by qemu-img/qemu-io or by the rig)
with guest writes while the job runs: afterwards the top image shows exactly what the chain
showed plus the guest's writes (qemu-img compare), ``qemu-img check`` is clean, and the header
names the base (or no backing file)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rig
from rig.jobs import StreamJob
from rig.testing import profiles
from tests.formats.helpers import check_clean, compare_raw, run, spec
from tests.jobs.chains import Chain, Op, backing_file, build, chains, content, ops

pytestmark = [pytest.mark.rig_needs("qemu_utils"), pytest.mark.timeout(60)]


def _guest_op(blk: rig.BlockBackend, op: Op) -> None:
    if op.kind == "zero":
        blk.write_zeroes(op.offset, op.length)
    else:
        blk.pwrite(op.offset, bytes([op.pattern]) * op.length)


def _guest_ops(blk: rig.BlockBackend, todo: tuple[Op, ...]) -> None:
    for op in todo:
        _guest_op(blk, op)


@st.composite
def cases(draw: st.DrawFn) -> tuple[Chain, int | None, tuple[Op, ...], tuple[Op, ...]]:
    chain = draw(chains())
    n = len(chain.layers)
    base = draw(st.one_of(st.none(), st.integers(0, n - 2)))
    size = chain.size
    kinds = ("write", "write", "zero")
    paused = draw(ops(size, max_ops=4, kinds=kinds))
    concurrent = draw(ops(size, max_ops=8, kinds=kinds))
    return chain, base, paused, concurrent


@given(case=cases())
@settings(profiles.selected(), max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_stream_keeps_content(tmp_path_factory: pytest.TempPathFactory,
                              case: tuple[Chain, int | None, tuple[Op, ...], tuple[Op, ...]]
                              ) -> None:
    chain, base, paused, concurrent = case
    tmp = tmp_path_factory.mktemp("chain")
    try:
        paths = build(chain, tmp)
        top = paths[-1]
        model = bytearray(content(top, tmp))
        for op in (*paused, *concurrent):
            op.apply(model)
        base_path = None if base is None else str(paths[base])
        with rig.open(spec(top)) as blk:
            job = StreamJob(blk, base=base_path)
            job.pause()
            job.start()
            first = job.events.wait_for(
                lambda e: e.data.get("status") in ("paused", "null"), 20)
            for op in paused:  # while the job waits at its first pause point
                _guest_op(blk, op)
            guest = threading.Thread(target=_guest_ops, args=(blk, concurrent))
            if first.data["status"] == "paused":  # (null: nothing to stream, no pause point)
                job.resume()
            guest.start()
            guest.join(60)
            assert job.wait(60) is None
        check_clean(top)
        compare_raw(top, bytes(model), tmp)
        if base is None:
            assert backing_file(top) is None
        else:
            assert backing_file(top) == paths[base].name
            # nothing above the base is needed any more
            for p in paths[base + 1:-1]:
                p.unlink()
            compare_raw(top, bytes(model), tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_smaller_backing_file(tmp_path: Path) -> None:
    """030's TestSmallerBackingFile: a 1 MiB backing under a 2 MiB top: the job ends early
    (progress jumps to the end) and the top reads zeroes past the backing's end."""
    base = tmp_path / "base.raw"
    base.write_bytes(b"\x11" * (1 << 20))
    top = tmp_path / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base.name, "-F", "raw", top, "2M")
    with rig.open(spec(top)) as blk:
        job = StreamJob(blk)
        job.start()
        assert job.wait(30) is None
        assert (job.offset, job.len, job.copied) == (2 << 20, 2 << 20, 1 << 20)
    check_clean(top)
    compare_raw(top, b"\x11" * (1 << 20) + bytes(1 << 20), tmp_path)


def _qcow2(path: Path, backing: Path, fmt: str, size: str) -> Path:
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", backing.name, "-F", fmt, path, size)
    return path


def test_short_intermediate_hides_what_lies_below(tmp_path: Path) -> None:
    """top (2M) -> mid1 (2M, empty) -> mid2 (1M) -> base (2M), streamed down to the base: past
    mid2's end the chain reads zeroes (the base's data is hidden), so the job copies zeroes
    into the top, which keeps reading zeroes there once it names the base."""
    base = tmp_path / "base.raw"
    base.write_bytes(b"\x22" * (2 << 20))
    mid2 = _qcow2(tmp_path / "mid2.qcow2", base, "raw", "1M")
    mid1 = _qcow2(tmp_path / "mid1.qcow2", mid2, "qcow2", "2M")
    top = _qcow2(tmp_path / "top.qcow2", mid1, "qcow2", "2M")
    want = content(top, tmp_path)
    assert want == b"\x22" * (1 << 20) + bytes(1 << 20)
    with rig.open(spec(top)) as blk:
        job = StreamJob(blk, base=str(base))
        job.start()
        assert job.wait(30) is None
        assert job.copied == 1 << 20
    assert backing_file(top) == base.name
    check_clean(top)
    compare_raw(top, want, tmp_path)


def test_short_first_backing_ends_the_job_early(tmp_path: Path) -> None:
    """QEMU's early end, kept: top (2M) -> mid (1M) -> base (2M), streamed down to the base.
    Where the top's own backing file ends the job stops looking (progress jumps to the end);
    once the top names the base, the base's data shows there (QEMU 7.2 does the same, checked
    with qemu-storage-daemon when this was written)."""
    base = tmp_path / "base.raw"
    base.write_bytes(b"\x22" * (2 << 20))
    mid = _qcow2(tmp_path / "mid.qcow2", base, "raw", "1M")
    top = _qcow2(tmp_path / "top.qcow2", mid, "qcow2", "2M")
    with rig.open(spec(top)) as blk:
        job = StreamJob(blk, base=str(base))
        job.start()
        assert job.wait(30) is None
        assert (job.offset, job.copied) == (2 << 20, 0)
    assert backing_file(top) == base.name
    compare_raw(top, b"\x22" * (2 << 20), tmp_path)


def test_nothing_to_stream_keeps_everything(tmp_path: Path) -> None:
    """030's stream_no_op: base = the top's own backing file: nothing is copied, the header is
    left alone."""
    base = tmp_path / "base.raw"
    base.write_bytes(b"\x33" * (1 << 20))
    top = tmp_path / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base.name, "-F", "raw", top)
    before = run("qemu-img", "map", "--output=json", top).stdout
    with rig.open(spec(top)) as blk:
        job = StreamJob(blk, base=str(base))
        job.start()
        assert job.wait(30) is None and job.copied == 0
    assert run("qemu-img", "map", "--output=json", top).stdout == before
    assert backing_file(top) == base.name
