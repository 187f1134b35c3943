"""The ``faults`` filter on real nodes (memory, file, a loop device): transparent without rules,
each action does exactly what it says under generated workloads, live control, graph options,
and a saved log replays the same failures.

Most properties run over a memory node with 1-byte blocks and no transfer limit, so the
chokepoint passes every user request down unchanged: request i of the workload is request i the
filter sees, and expectations can be stated per user request.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rig
from rig.core.backend import BlockBackend
from rig.errors import ConfigError, StateError
from rig.faults import (
    Corrupt,
    Delay,
    Drop,
    Error,
    FaultEventLog,
    LyingFlush,
    ReplayDivergence,
    Replayer,
    Rule,
    SetState,
    Torn,
)
from rig.filters.base import Filter
from rig.filters.faults import FaultsFilter, find_faults
from rig.nodes.memory import MemoryNode
from rig.testing.clock import VirtualClock
from rig.testing.model import DiskModel
from rig.testing.ops import Discard, Flush, Op, Read, Write, WriteZeroes, apply_to_backend, pattern
from rig.testing.strategies import extents, io_ops

SIZE = 64 * 1024
FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
workloads = st.lists(io_ops(SIZE, max_len=8192), min_size=1, max_size=25)

Outcome = bytes | int | None  # read data, errno, or None (a write-type op succeeded)


def memory(lbs: int = 1, **faults: Any) -> BlockBackend:
    spec: dict[str, Any] = {"driver": "memory", "size": SIZE, "logical-block-size": lbs}
    return rig.open({"driver": "faults", "file": spec, **faults})


def faults_of(blk: BlockBackend) -> FaultsFilter:
    return find_faults(blk.root)


def outcome(op: Op, blk: BlockBackend) -> Outcome:
    try:
        return apply_to_backend(op, blk)
    except OSError as e:
        return e.errno


def run(ops: list[Op], blk: BlockBackend) -> list[Outcome]:
    return [outcome(op, blk) for op in ops]


def kind(op: Op) -> str:
    return {Read: "read", Write: "write", WriteZeroes: "zero", Discard: "discard",
            Flush: "flush"}[type(op)]


def span(op: Op) -> tuple[int, int]:
    return (0, 0) if isinstance(op, Flush) else (op.offset, op.offset + op.length)


def model_apply(model: DiskModel, op: Op) -> None:
    if isinstance(op, Write):
        model.write(op.offset, op.data)
    elif isinstance(op, WriteZeroes | Discard):
        model.zero(op.offset, op.length)


class FlushCounter(Filter):
    """Counts the flushes that reach it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.flushes = 0

    def _flush_to_os(self) -> None:
        self.flushes += 1


def counted(**kw: Any) -> tuple[BlockBackend, FaultsFilter, FlushCounter]:
    """faults -> FlushCounter -> memory, built by hand."""
    counter = FlushCounter()
    counter.attach_child("file", MemoryNode(SIZE))
    f = FaultsFilter(**kw)
    f.attach_child("file", counter)
    return BlockBackend(f), f, counter


# ---------------------------------------------------------------------------- transparency
def test_the_filter_overrides_every_data_verb_and_flush() -> None:
    assert FaultsFilter.modifies_data
    for verb in (*Filter.DATA_VERBS, "_flush"):
        assert getattr(FaultsFilter, verb) is not getattr(Filter, verb), verb


@FAST
@given(ops=workloads, lbs=st.sampled_from([1, 512, 4096]))
def test_no_rules_is_transparent_on_memory(ops: list[Op], lbs: int) -> None:
    bare = rig.open({"driver": "memory", "size": SIZE, "logical-block-size": lbs})
    ops = [*ops, Read(SIZE - 10, 20), Write(SIZE, 1, 7)]  # errors must be identical too
    with bare, memory(lbs) as faulty:
        assert run(ops, faulty) == run(ops, bare)
        assert faulty.pread(0, SIZE) == bare.pread(0, SIZE)
        for off in range(0, SIZE, 4096):
            assert faulty.block_status(off, SIZE - off) == bare.block_status(off, SIZE - off)
        assert faults_of(faulty).counters() == {}
        assert not faults_of(faulty).log.events


@FAST
@given(ops=workloads, cache=st.sampled_from(["writeback", "none"]))
def test_no_rules_is_transparent_on_files(tmp_path_factory: pytest.TempPathFactory,
                                          ops: list[Op], cache: str) -> None:
    d = tmp_path_factory.mktemp("files")
    specs = []
    for name in ("bare.img", "faulty.img"):
        with open(d / name, "wb") as f:
            f.truncate(SIZE)
        specs.append({"driver": "file", "filename": str(d / name)})
    with rig.open(specs[0], cache=cache) as bare, rig.open(
            {"driver": "faults", "file": specs[1]}, cache=cache) as faulty:
        assert run(ops, faulty) == run(ops, bare)
    assert (d / "faulty.img").read_bytes() == (d / "bare.img").read_bytes()


# ------------------------------------------------------------------------------ predicates
@FAST
@given(ops=workloads, ext=extents(SIZE, max_len=4096),
       ops_hit=st.sets(st.sampled_from(["read", "write", "zero", "discard"]), min_size=1))
def test_range_rule_fails_exactly_the_overlapping_requests(ops: list[Op], ext: tuple[int, int],
                                                           ops_hit: set[str]) -> None:
    start, end = ext[0], ext[0] + ext[1]
    model = DiskModel(SIZE)
    with memory() as blk:
        faults_of(blk).add_rule(Rule(Error("EIO"), name="bad", op=ops_hit, start=start, end=end))
        for op in ops:
            lo, hi = span(op)
            hit = kind(op) in ops_hit and lo < end and hi > start
            got = outcome(op, blk)
            if hit:
                assert got == errno.EIO, op
                continue
            assert got != errno.EIO, op
            if isinstance(op, Read):
                assert got == model.read(op.offset, op.length)
            model_apply(model, op)
        faults_of(blk).disable("bad")
        assert blk.pread(0, SIZE) == model.read(0, SIZE)  # failed writes left nothing behind


@FAST
@given(ops=workloads, nth=st.integers(1, 6), what=st.sampled_from(["write", "read"]))
def test_nth_fails_exactly_the_nth_request_of_its_op(ops: list[Op], nth: int, what: str) -> None:
    with memory() as blk:
        faults_of(blk).add_rule(Rule(Error("ENOSPC"), op=what, nth=nth))
        got = run(ops, blk)
    mine = [i for i, op in enumerate(ops) if kind(op) == what]
    failed = [i for i, g in enumerate(got) if g == errno.ENOSPC]
    assert failed == mine[nth - 1:nth]


@FAST
@given(ops=workloads, seed=st.integers(0, 2**32))
def test_probability_with_a_seed_is_reproducible(ops: list[Op], seed: int) -> None:
    def once() -> tuple[list[Outcome], list[Any]]:
        with memory(seed=seed, rules=[{"action": "error", "probability": 0.5},
                                      {"action": "corrupt", "bits": 3, "probability": 0.5}]) as b:
            return run(ops, b), [e.outcome() for e in faults_of(b).log]

    assert once() == once()


def test_probability_fails_about_p_of_the_requests() -> None:
    with memory(seed=11, rules=[{"action": "error", "op": "read", "probability": "20%"}]) as blk:
        got = [outcome(Read(0, 512), blk) for _ in range(3000)]
    assert 480 <= got.count(errno.EIO) <= 720  # 600 expected, sd ~22


def test_state_and_set_state_through_the_filter() -> None:
    with memory(rules=[
        {"name": "arm", "action": "set-state", "op": "flush", "new-state": 2},
        {"name": "fail", "action": "error", "op": "write", "state": 2, "errno": "EROFS"},
    ]) as blk:
        blk.pwrite(0, b"a")
        blk.flush()
        with pytest.raises(OSError) as exc:
            blk.pwrite(0, b"b")
        assert exc.value.errno == errno.EROFS
        f = find_faults(blk.root)
        assert f.state == 2
        f.state = 1
        blk.pwrite(0, b"c")
        assert blk.pread(0, 1) == b"c"


def test_time_window_and_delay_on_a_virtual_clock() -> None:
    clock = VirtualClock()
    f = FaultsFilter(clock=clock, rules=[Rule(Delay(0.5), name="slow", op="read"),
                                         Rule(Error(), name="late", after=60)])
    f.attach_child("file", MemoryNode(SIZE))
    with BlockBackend(f) as blk:
        blk.pread(0, 512)
        blk.pwrite(0, b"x")
        assert clock.sleeps == [0.5]
        clock.advance(60)
        with pytest.raises(OSError):
            blk.pread(0, 512)
        assert clock.sleeps == [0.5, 0.5]  # the delay fires too, before the error
        assert f.counters() == {"slow": 2, "late": 1}
        assert [round(e.time, 6) for e in f.log] == [0.0, 60.5, 60.5]  # when they fired


# --------------------------------------------------------------------------------- actions
def test_errors_look_real_by_name_or_number() -> None:
    with memory(rules=[{"action": "error", "op": "write", "errno": 28},
                       {"action": "error", "op": "read", "errno": "EMEDIUMTYPE"}]) as blk:
        for call, code in ((lambda: blk.pwrite(0, b"x"), errno.ENOSPC),
                           (lambda: blk.pread(0, 1), errno.EMEDIUMTYPE)):
            with pytest.raises(OSError) as exc:
                call()
            assert type(exc.value) is OSError
            assert (exc.value.errno, exc.value.strerror) == (code, os.strerror(code))


@FAST
@given(ext=extents(SIZE, 512, 16384, unaligned=False), sectors=st.integers(0, 40),
       ack=st.booleans(), unit=st.sampled_from([512, 4096]))
def test_torn_writes_land_exactly_the_prefix(ext: tuple[int, int], sectors: int, ack: bool,
                                             unit: int) -> None:
    offset, length = ext
    with memory(lbs=512) as blk:
        old = pattern(1, SIZE)
        blk.pwrite(0, old)
        torn = Torn(sectors=sectors, unit=unit, ack=ack)
        faults_of(blk).add_rule(Rule(torn, name="t", once=True))
        new = pattern(2, length)
        try:
            blk.pwrite(offset, new)
            failed = False
        except OSError as e:
            assert e.errno == errno.EIO
            failed = True
        assert failed is not ack
        landed = Torn(sectors=sectors, unit=unit).landed(offset, length)
        [event] = faults_of(blk).log.events
        assert event.landed == landed
        got = blk.pread(0, SIZE)
    want = bytearray(old)
    want[offset:offset + landed] = new[:landed]
    assert got == want


def test_torn_unit_must_fit_the_device_block_size() -> None:
    with memory(lbs=4096) as blk, pytest.raises(ConfigError, match="'unit': 512 is not a mult"):
        faults_of(blk).add_rule(Rule(Torn(unit=512)))


@FAST
@given(ops=workloads, bits=st.integers(1, 40), ext=extents(SIZE, max_len=2048))
def test_corrupt_flips_exactly_n_bits_of_the_returned_data_inside_the_range(
        ops: list[Op], bits: int, ext: tuple[int, int]) -> None:
    start, end = ext[0], ext[0] + ext[1]
    with memory(seed=5) as blk:
        blk.pwrite(0, pattern(3, SIZE))
        faults_of(blk).add_rule(Rule(Corrupt(bits), name="c", start=start, end=end))
        for op in ops:
            before = len(faults_of(blk).log)
            if not isinstance(op, Read):
                apply_to_backend(op, blk)
                continue
            faults_of(blk).disable("c")
            clean = blk.pread(op.offset, op.length)
            faults_of(blk).enable("c")
            got = blk.pread(op.offset, op.length)
            flipped = {(op.offset + i) * 8 + j for i, (a, b) in enumerate(zip(got, clean,
                                                                             strict=True))
                       for j in range(8) if (a ^ b) >> j & 1}
            lo, hi = max(start, op.offset), min(end, op.offset + op.length)
            assert len(flipped) == (min(bits, (hi - lo) * 8) if hi > lo else 0)
            assert all(lo * 8 <= bit < hi * 8 for bit in flipped)
            new = faults_of(blk).log.events[before:]
            assert {b for e in new for b in e.bits} == flipped  # the log names the exact bits


@FAST
@given(ops=workloads)
def test_drop_acknowledges_and_leaves_the_old_data(ops: list[Op]) -> None:
    with memory() as blk:
        old = pattern(4, SIZE)
        blk.pwrite(0, old)
        faults_of(blk).add_rule(Rule(Drop(), name="d"))
        got = run(ops, blk)
        assert all(g is None or isinstance(g, bytes) for g in got)  # nothing failed
        assert all(g == old[op.offset:op.offset + op.length]
                   for op, g in zip(ops, got, strict=True) if isinstance(op, Read))
        assert blk.pread(0, SIZE) == old
        dropped = sum(1 for op in ops if isinstance(op, Write | WriteZeroes | Discard))
        assert faults_of(blk).counters() == {"d": dropped}


@FAST
@given(ops=workloads)
def test_lying_flush_never_reaches_the_child(ops: list[Op]) -> None:
    blk, f, counter = counted()
    with blk:
        blk.flush()
        assert counter.flushes == 1  # an honest flush goes down
        f.add_rule(Rule(LyingFlush(), name="liar"))
        model = DiskModel(SIZE)
        for op in ops:
            got = outcome(op, blk)
            if isinstance(op, Read):
                assert got == model.read(op.offset, op.length)
            model_apply(model, op)
        blk.flush()
        assert counter.flushes == 1
        assert f.counters()["liar"] >= 1 + sum(isinstance(op, Flush) for op in ops)
        f.remove_rule("liar")
        blk.flush()
        assert counter.flushes == 2


def test_gone_fails_everything_until_revived() -> None:
    with memory(rules=[{"action": "gone", "op": "write", "nth": 2}]) as blk:
        blk.pwrite(0, b"a")
        for call in (lambda: blk.pwrite(0, b"b"), lambda: blk.pread(0, 1), blk.flush,
                     lambda: blk.write_zeroes(0, 1), lambda: blk.discard(0, 4096),
                     lambda: blk.block_status(0, 1)):
            with pytest.raises(OSError) as exc:
                call()
            assert exc.value.errno == errno.ENODEV
        f = faults_of(blk)
        assert f.counters() == {"rule-0": 1}
        assert [e.action for e in f.log] == ["gone"] * 5  # block_status is not a request
        f.revive()
        assert blk.pread(0, 1) == b"a"


# ---------------------------------------------------------------------------- live control
def test_live_control_from_python() -> None:
    with rig.open({"driver": "raw", "file": {"driver": "faults", "node-name": "inj",
                                             "file": {"driver": "memory", "size": SIZE}}}) as blk:
        f = find_faults(blk.root, "inj")
        name = f.add_rule(Rule(Error(), op="write", start=4096, end=8192))
        assert name == "rule-0"
        blk.pwrite(0, b"ok")
        with pytest.raises(OSError):
            blk.pwrite(4096, b"no")
        f.disable(name)
        blk.pwrite(4096, b"ok")
        f.enable(name)
        assert f.add_rule(Rule(Delay(0), name="first"), first=True) == "first"
        assert [r.name for r in f.rules()] == ["first", "rule-0"]
        with pytest.raises(OSError):
            blk.pwrite(4096, b"no")
        assert f.counters() == {"first": 1, "rule-0": 2}
        assert f.remove_rule(name).start == 4096
        blk.pwrite(4096, b"ok")
        assert f.seq == 5
        with pytest.raises(ConfigError, match="no faults node named 'x'"):
            find_faults(blk.root, "x")


def test_graph_options_rules_file_seed_and_streamed_log(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nname = "flaky"\naction = "error"\nop = "read"\n'
                     'probability = 0.5\n')
    log = tmp_path / "run.jsonl"
    spec = {"driver": "faults", "file": {"driver": "memory", "size": SIZE}, "rules": str(rules),
            "seed": 123, "log": str(log)}
    with rig.open(spec) as blk:
        got = [outcome(Read(0, 512), blk) for _ in range(50)]
        streamed = FaultEventLog.load(log)  # already on disk while open
    assert streamed.seed == 123
    assert streamed.rules[0]["name"] == "flaky"
    assert [e.seq for e in streamed] == [i + 1 for i, g in enumerate(got) if g == errno.EIO]
    assert 10 < len(streamed) < 40


def test_keyval_options_and_unknown_keys() -> None:
    with rig.open("driver=faults,file.driver=memory,file.size=64k,rules.0.action=error,"
                  "rules.0.op=read|zero,rules.0.start=4k,rules.0.end=8k,seed=7") as blk:
        blk.pread(0, 4096)
        with pytest.raises(OSError):
            blk.pread(4096, 1)
    with pytest.raises(ConfigError, match=r"doesn't support the option 'rulez\.0\.action'"):
        rig.open("driver=faults,file.driver=memory,file.size=64k,rulez.0.action=error")
    with pytest.raises(ConfigError, match=r"cannot create the fault log \(log=\) '/nonexistent/l'"):
        memory(log="/nonexistent/l")
    with pytest.raises(ConfigError, match="'rules' is both a file name and a list"):
        rig.open({"driver": "faults", "file": {"driver": "memory", "size": SIZE},
                  "rules": "x.toml", "rules.0.action": "error"})


# ---------------------------------------------------------------------------------- replay
replay_rules = [
    {"action": "delay", "seconds": 0, "probability": 0.3},
    {"action": "error", "op": ["write", "zero"], "probability": 0.15, "errno": "ENOSPC"},
    {"action": "corrupt", "bits": 5, "probability": 0.3},
    {"action": "torn", "sectors": 3, "unit": 1, "ack": True, "probability": 0.3},
    {"action": "drop", "probability": 0.2},
    {"action": "lying-flush", "probability": 0.5},
    {"action": "gone", "probability": 0.02},
]


@FAST
@given(ops=workloads, seed=st.integers(0, 2**32))
def test_a_replayed_log_reproduces_the_same_failures(tmp_path_factory: pytest.TempPathFactory,
                                                     ops: list[Op], seed: int) -> None:
    path = tmp_path_factory.mktemp("replay") / "run.jsonl"
    with memory(seed=seed, rules=replay_rules) as blk:
        recorded = run(ops, blk)
        faults_of(blk).log.save(path)
        final = bytearray(SIZE)  # what the device below holds, read past the filter
        faults_of(blk).child.preadv(0, SIZE, [memoryview(final)])
        counters = faults_of(blk).counters()
    with memory(replay=str(path)) as again:
        assert run(ops, again) == recorded
        replayer = faults_of(again).source
        assert isinstance(replayer, Replayer)
        original = FaultEventLog.load(path)
        assert [e.outcome() for e in replayer.log] == [e.outcome() for e in original]
        assert {k: v for k, v in faults_of(again).counters().items() if v} == {
            k: v for k, v in counters.items() if v}
        replayed = bytearray(SIZE)
        faults_of(again).child.preadv(0, SIZE, [memoryview(replayed)])
        assert replayed == final


def test_replay_refuses_a_different_workload_and_live_rules(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with memory(rules=[{"action": "error", "op": "read", "nth": 2}]) as blk:
        blk.pread(0, 512)
        with pytest.raises(OSError):
            blk.pread(512, 512)
        faults_of(blk).log.save(path)
    with memory(replay=str(path)) as again:
        again.pread(0, 512)
        with pytest.raises(ReplayDivergence, match="request 2: recorded read 512\\+512, "
                                                   "replayed read 1024\\+512"):
            again.pread(1024, 512)
        with pytest.raises(StateError, match="replays a log"):
            faults_of(again).add_rule(Rule(SetState(), new_state=2))
    with pytest.raises(ConfigError, match="cannot be combined"):
        memory(replay=str(path), rules=[{"action": "drop"}])
    with pytest.raises(ConfigError, match="a replay uses the seed of its log"):
        memory(replay=str(path), seed=3)


# ------------------------------------------------------------------------------ real devices
@pytest.fixture
def direct_file(tmp_path: Path) -> Iterator[dict[str, Any]]:
    path = tmp_path / "d.img"
    with open(path, "wb") as f:
        f.truncate(SIZE)
    yield {"driver": "file", "filename": str(path)}


def test_range_errors_on_an_o_direct_file(direct_file: dict[str, Any]) -> None:
    """Unaligned user writes become aligned read-modify-writes below the chokepoint: the rule
    sees the aligned requests, and a failed write changes nothing on disk."""
    spec = {"driver": "faults", "file": direct_file,
            "rules": [{"action": "error", "op": "write", "start": 8192, "end": 8193}]}
    with rig.open(spec, cache="none") as blk:
        align = blk.limits.request_alignment
        assert align > 1
        blk.pwrite(8192 - align, b"a" * align)  # ends where the rule starts
        with pytest.raises(OSError):
            blk.pwrite(8192 + align - 1, b"b")  # unaligned, RMW of the block holding byte 8192
        blk.pwrite(8192 + align, b"c")
    data = Path(direct_file["filename"]).read_bytes()
    assert data[8192 - align:8192] == b"a" * align
    assert data[8192:8192 + align] == bytes(align)
    assert data[8192 + align:8192 + align + 1] == b"c"


@pytest.mark.rig_needs("loop")
def test_torn_write_on_a_real_loop_device(rig_loop: Any) -> None:
    """A 4 KiB-sector device with direct I/O: a torn 16 KiB write lands exactly one sector."""
    dev = rig_loop(1 << 20, block_size=4096, direct_io=True)
    spec = {"driver": "faults", "file": {"driver": "host_device", "filename": dev.path},
            "rules": [{"name": "tear", "action": "torn", "sectors": 1, "unit": 4096,
                       "ack": True, "once": True}]}
    with rig.open(spec, cache="none") as blk:
        blk.pwrite(0, b"\x11" * 16384)
        assert blk.pread(0, 16384) == b"\x11" * 4096 + bytes(12288)
        assert faults_of(blk).counters() == {"tear": 1}
        with pytest.raises(ConfigError):
            faults_of(blk).add_rule(Rule(Torn(unit=512)))
    with rig.open({"driver": "host_device", "filename": dev.path}, cache="none") as bare:
        assert bare.pread(0, 16384) == b"\x11" * 4096 + bytes(12288)  # really on the device
    assert json.dumps(faults_of(blk).log.events[0].to_json())
