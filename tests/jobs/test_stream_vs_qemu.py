"""The rig's stream job side by side with QEMU's (qemu-storage-daemon, block-stream over QMP):
the same chains and the same injected faults give the same events, offsets, errors and final
content. qemu-iotests 030's TestEIO/TestENOSPC expectations are checked exactly."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rig.testing import profiles
from tests.formats.helpers import check_clean, run
from tests.jobs import qsd
from tests.jobs.chains import Chain, Layer, Op, backing_file, build, chains, content
from tests.jobs.faults import IOTEST_030, SIMPLE, blkdebug_name, write_rules
from tests.jobs.qsd import Outcome
from tests.jobs.runner import rig_stream

pytestmark = [pytest.mark.rig_needs("qemu_utils"),
              pytest.mark.skipif(not qsd.available(), reason="qemu-storage-daemon (Debian "
                                 "qemu-system-common) and the qemu.qmp library are needed: "
                                 "run ci/setup.sh")]
MiB = 1 << 20


def _030_chain(tmp: Path, err: int) -> Path:
    """030's TestEIO: a 2 MiB raw backing file full of data, blkdebug over it, a qcow2 top."""
    tmp.mkdir(parents=True, exist_ok=True)
    backing = tmp / "backing.img"
    backing.write_bytes(bytes(i % 256 for i in range(2 * MiB)))
    conf = write_rules(tmp / "rules.conf", IOTEST_030, errno=err, sector=1024)
    top = tmp / "test.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", blkdebug_name(conf, backing),
        "-F", "raw", top, "2M")
    return top


EXPECTED_030 = {
    # (on-error, errno): (completed, error, offset, actions, stops)
    ("report", errno.EIO): (True, "Input/output error", 524288, ["report"], []),
    ("ignore", errno.EIO): (True, "Input/output error", 2 * MiB, ["ignore"], []),
    ("stop", errno.EIO): (True, None, 2 * MiB, ["stop"],
                          [{"status": "paused", "offset": 524288, "io-status": "failed"}]),
    ("enospc", errno.EIO): (True, "Input/output error", 524288, ["report"], []),
    ("enospc", errno.ENOSPC): (True, None, 2 * MiB, ["stop"],
                               [{"status": "paused", "offset": 524288,
                                 "io-status": "nospace"}]),
}


@pytest.mark.parametrize(("on_error", "err"), list(EXPECTED_030))
def test_iotest_030_errors(tmp_path: Path, on_error: str, err: int) -> None:
    completed, error, offset, actions, stops = EXPECTED_030[(on_error, err)]
    want = Outcome(completed, error, offset, 2 * MiB, actions, stops)
    rig_top = _030_chain(tmp_path / "rig", err)
    qemu_top = _030_chain(tmp_path / "qemu", err)
    before = backing_file(rig_top)
    got_rig, job = rig_stream(rig_top, on_error=on_error)
    got_qemu = qsd.stream(qemu_top, on_error=on_error)
    assert got_qemu == want, "QEMU itself no longer behaves as the reference says"
    assert got_rig == want
    check_clean(rig_top)
    # the backing file goes only when the job succeeded
    assert backing_file(rig_top) == (None if error is None else before)
    assert (backing_file(qemu_top) is None) == (backing_file(rig_top) is None)
    for side in ("rig", "qemu"):
        (tmp_path / side / "rules.conf").write_text("")  # disarm, to read the chains back
    run("qemu-img", "compare", rig_top, qemu_top)
    assert content(rig_top, tmp_path) == bytes(i % 256 for i in range(2 * MiB))
    statuses = job.events.statuses()
    assert statuses[0] == "created" and statuses[-2:] == ["concluded", "null"]
    assert ("aborting" in statuses) == (error is not None)


@st.composite
def faulty_chains(draw: st.DrawFn) -> tuple[Chain, int | None, int | None, dict[str, object]]:
    """A chain, a base index (or None), and a fault (layer index above the base, or None)."""
    chain = draw(chains(min_layers=2, max_layers=3))
    chain = Chain(chain.layers, "qemu")
    n = len(chain.layers)
    base = draw(st.one_of(st.none(), st.integers(0, n - 2)))
    lowest = 0 if base is None else base + 1
    faulty = lowest <= n - 2 and draw(st.sampled_from((True, True, True, False)))
    fault = draw(st.integers(lowest, n - 2)) if faulty else None
    rules: dict[str, object] = {}
    if fault is not None:
        size = chain.layers[fault].size
        rules = {"errno": draw(st.sampled_from((errno.EIO, errno.ENOSPC))),
                 "once": draw(st.sampled_from(("on", "off"))),
                 "sector": draw(st.integers(0, size // 512 - 1))}
        # the faulty layer holds data, so the stream reads it
        layer = chain.layers[fault]
        layers = list(chain.layers)
        layers[fault] = Layer(layer.fmt, layer.size, layer.cluster_size,
                              (*layer.ops, *_fill_ops(size)))
        chain = Chain(tuple(layers), chain.maker)
    return chain, base, fault, rules


def _fill_ops(size: int) -> tuple[Op, ...]:
    return (Op(0, size, 0x5A),)


def _build_side(chain: Chain, tmp: Path, fault: int | None) -> Path:
    """The chain in ``tmp``; the faulty layer under blkdebug with ``tmp/rules.conf`` (empty:
    no faults until a test writes rules into it)."""
    tmp.mkdir(parents=True)
    names: dict[int, str] = {}
    conf = tmp / "rules.conf"
    conf.write_text("")
    if fault is not None:
        image = tmp / f"L{fault}.{chain.layers[fault].fmt}"
        names[fault + 1] = blkdebug_name(conf, image)
    return build(chain, tmp, backing_names=names)[-1]


def _arm(top: Path, rules: dict[str, object]) -> None:
    conf = top.parent / "rules.conf"
    if rules:
        write_rules(conf, SIMPLE, **rules)
    else:
        conf.write_text("")


@given(case=faulty_chains(), on_error=st.sampled_from(("report", "ignore", "stop", "enospc")))
@settings(profiles.selected(), max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_same_outcome_as_qemu(tmp_path_factory: pytest.TempPathFactory,
                              case: tuple[Chain, int | None, int | None, dict[str, object]],
                              on_error: str) -> None:
    chain, base, fault, rules = case
    tmp = tmp_path_factory.mktemp("side")
    try:
        rig_top = _build_side(chain, tmp / "rig", fault)
        qemu_top = _build_side(chain, tmp / "qemu", fault)
        want = content(rig_top, tmp)
        name = None if base is None else f"L{base}.{chain.layers[base].fmt}"
        for top in (rig_top, qemu_top):
            _arm(top, rules)
        got_rig, _ = rig_stream(rig_top, base=name and str(rig_top.parent / name),
                                on_error=on_error, max_stops=2)
        got_qemu = qsd.stream(qemu_top, base=name and str(qemu_top.parent / name),
                              on_error=on_error, max_stops=2)
        assert got_rig == got_qemu
        event(f"fault={fault is not None} {on_error}: error={got_rig.error} "
              f"stops={len(got_rig.stopped)} cancelled={not got_rig.completed}")
        for top in (rig_top, qemu_top):
            _arm(top, {})
        check_clean(rig_top)
        assert content(rig_top, tmp) == want
        assert content(qemu_top, tmp) == want
        assert run("qemu-img", "compare", rig_top, qemu_top).returncode == 0
        rig_backing, qemu_backing = backing_file(rig_top), backing_file(qemu_top)
        assert (rig_backing is None) == (qemu_backing is None)
        if rig_backing is not None and qemu_backing is not None:
            assert ((rig_top.parent / rig_backing).resolve().name
                    == (qemu_top.parent / qemu_backing).resolve().name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
