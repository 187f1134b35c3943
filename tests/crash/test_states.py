"""Crash states: the model on hand-made logs, property tests against the DiskModel, exhaustive
enumeration checked against a brute-force reference, seeded sampling, and the writecache
filter's power cuts, each of which must be one of the enumerated states."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import rig
from rig.core.backend import BlockBackend
from rig.crash.log_replay import materialize
from rig.crash.logfile import LogWriter, WriteLog, read_log
from rig.crash.states import CrashState, CrashStates
from rig.filters.recorder import RecorderFilter
from rig.filters.writecache import WriteCacheFilter
from rig.testing.model import DiskModel
from rig.testing.ops import (
    Discard,
    Flush,
    Op,
    Read,
    Write,
    WriteZeroes,
    apply_to_backend,
    apply_to_model,
)
from rig.testing.strategies import cache_modes, workloads

A, B, C, D = (bytes([c]) * 1024 for c in b"ABCD")


def make_log(path: Path, size: int, script: Sequence[tuple[Any, ...]]) -> WriteLog:
    with LogWriter(path, device_size=size, logical_block_size=1) as w:
        for step in script:
            getattr(w, step[0])(*step[1:-1], **step[-1])
    return read_log(path)


# ------------------------------------------------------------------------ descriptions
@given(cut=st.integers(0, 10**6),
       keep=st.lists(st.integers(1, 10**6), unique=True, max_size=5).map(
           lambda v: tuple(sorted(v))),
       torn=st.dictionaries(st.integers(1, 999),
                            st.lists(st.integers(0, 64), min_size=1, unique=True).map(
                                lambda v: tuple(sorted(v))), max_size=4).map(
           lambda d: tuple(sorted(d.items()))))
def test_a_state_prints_and_parses_back(cut: int, keep: tuple[int, ...],
                                        torn: tuple[tuple[int, tuple[int, ...]], ...]) -> None:
    """Names as the enumeration writes them: records increasing, none both kept and torn."""
    keep = tuple(seq for seq in keep if seq not in dict(torn))
    state = CrashState(cut, keep, torn)
    assert CrashState.parse(str(state)) == state


def test_state_text_is_compact_and_bad_text_refused() -> None:
    assert str(CrashState(9, (3, 5), ((7, (0, 1, 2, 5)),))) == "cut 9 keep 3,5 torn 7[0-2,5]"
    assert str(CrashState(4)) == "cut 4"
    with pytest.raises(ValueError, match="not a crash state"):
        CrashState.parse("cut nine")


# ------------------------------------------------------------------------ the model by hand
def test_the_model_on_a_small_log(tmp_path: Path) -> None:
    log = make_log(tmp_path / "h.wlog", 4096, [
        ("write", 0, A + A, {}),                 # 1: in flight until the flush
        ("write", 1024, B, {"fua": True}),       # 2: durable at once, over the second half of 1
        ("write", 2048, C, {}),                  # 3
        ("mark", "before flush", {}),            # 4
        ("flush", {}),                           # 5: covers 1..4
        ("write", 0, D, {}),                     # 6
    ])
    states = CrashStates(log)
    assert states.cuts() == [1, 4, 6]  # before the FUA write, before the flush, the end
    got = {str(s): states.image(s) for s in states}
    z = bytes(1024)
    assert got == {
        "cut 1": bytes(4096), "cut 1 keep 1": A + A + z + z,
        "cut 4": z + B + z + z, "cut 4 keep 1": A + B + z + z,   # 1 can never cover 2
        "cut 4 keep 3": z + B + C + z, "cut 4 keep 1,3": A + B + C + z,
        "cut 6": A + B + C + z, "cut 6 keep 6": D + B + C + z,
    }
    assert states.count() == 8 and states.exhaustive()
    assert states.durable_image(4) == z + B + z + z
    assert states.pieces(CrashState(4, (1, 3))) == [(0, A), (2048, C)]  # 1 without 2's part
    torn = CrashStates(log, torn=True)
    assert torn.count() == 2**4 + 2**(2 + 2) + 2**2  # sectors of 512 bytes in flight
    assert torn.image(CrashState(4, (), ((1, (1,)), (3, (0,))))) == (
        z[:512] + A[:512] + B + C[:512] + bytes(512) + z)


def test_a_flush_makes_durable_only_what_it_covers(tmp_path: Path) -> None:
    log = make_log(tmp_path / "c.wlog", 4096, [
        ("write", 0, A, {}), ("write", 1024, B, {}), ("flush", {"covers": 1}),
    ])
    states = CrashStates(log)
    assert states.cuts() == [2, 3]
    assert [str(s) for s in states if s.cut == 3] == ["cut 3", "cut 3 keep 2"]
    assert states.image(CrashState(3)) == A + bytes(3072)
    with pytest.raises(ValueError, match=r"records \[1\] are not in flight at cut 3"):
        states.image(CrashState(3, (1,)))
    with pytest.raises(ValueError, match=r"record 2 has sectors 0\.\.1"):
        states.image(CrashState(3, (), ((2, (2,)),)))


def test_materialize_writes_the_state_and_any_cut_can_be_asked_for(tmp_path: Path) -> None:
    log = make_log(tmp_path / "m.wlog", 4096, [
        ("write", 0, A, {}), ("write", 1024, B, {}), ("write", 0, C, {"fua": True}),
    ])
    initial = bytes([7]) * 4096
    with rig.open({"driver": "memory", "size": 4096}) as blk:
        materialize(log, CrashState(2, (2,)), blk, initial=initial)  # 2 is no cut point
        assert blk.pread(0, 4096) == initial[:1024] + B + initial[2048:]
        materialize(log, CrashState.parse("cut 3 keep 2"), blk)
        assert blk.pread(0, 4096) == C + B + bytes(2048)
    with pytest.raises(ValueError, match=r"records \[1\] are not in flight"):
        CrashStates(log).image(CrashState(3, (1, 2)))  # the FUA write 3 covered all of 1
    with pytest.raises(ValueError, match="outside the log"):
        CrashStates(log).image(CrashState(9))


# ------------------------------------------------------------------------ recorded workloads
def recorded(path: Path, ops: Sequence[Op], size: int, lbs: int = 1,
             cache: str = "writeback") -> Iterator[tuple[int, DiskModel, bool]]:
    """Run ``ops`` on recorder -> memory and on a DiskModel; yield (last seq, model, whole)
    after each op (``whole``: the op left exactly one record or none)."""
    model = DiskModel(size)
    spec = {"driver": "recorder", "log": str(path),
            "file": {"driver": "memory", "size": size, "logical-block-size": lbs}}
    with rig.open(spec, cache=cache) as blk:
        rec = blk.root
        assert isinstance(rec, RecorderFilter)
        for op in ops:
            before = rec.writer.last_seq
            apply_to_backend(op, blk)
            writethrough = cache in ("writethrough", "directsync")
            if writethrough and isinstance(op, Write | WriteZeroes):
                op = replace(op, fua=True)  # the backend puts FUA on every write
            apply_to_model(op, model)
            if writethrough and isinstance(op, Discard):
                model.flush()  # and flushes after a discard
            yield rec.writer.last_seq, copy.deepcopy(model), rec.writer.last_seq - before <= 1


def check_states_against_models(log: WriteLog, models: dict[int, DiskModel],
                                 states: CrashStates, exact: bool) -> int:
    checked = 0
    by_cut: dict[int, list[CrashState]] = {}
    for state in states:
        by_cut.setdefault(state.cut, []).append(state)
    for cut, group in by_cut.items():
        model = models.get(cut)
        if model is None:  # a cut inside one op's records (read-modify-write pieces)
            continue
        allowed = model.possible_after_power_cut(0, model.size)
        for state in group:
            img = states.image(state)
            bad = [i for i, (v, a) in enumerate(zip(img, allowed, strict=True)) if v not in a]
            assert not bad, (f"{state}: byte {bad[0]} = {img[bad[0]]:#x} is no value a power "
                             f"cut could leave ({sorted(allowed[bad[0]])})")
            checked += 1
        if exact:
            assert states.image(group[0]) == model.durable(), f"{group[0]} lost durable data"
            everything = CrashState(cut, tuple(p.record.seq for p in states.plan(cut).pending))
            assert states.image(everything) == model.read(0, model.size), f"{everything}"
    return checked


@settings(max_examples=40, deadline=None)
@given(ops=workloads(4096, 1, 1024, max_ops=14, discard_align=512), torn=st.booleans(),
       lbs=st.sampled_from([1, 512]), cache=st.sampled_from(["writeback", "writethrough"]))
def test_every_state_keeps_durable_data_and_holds_only_written_values(
        tmp_path_factory: pytest.TempPathFactory, ops: list[Op], torn: bool, lbs: int,
        cache: str) -> None:
    path = tmp_path_factory.mktemp("p") / "w.wlog"
    models: dict[int, DiskModel] = {0: DiskModel(4096)}
    for seq, model, _ in recorded(path, ops, 4096, lbs, cache):
        models[seq] = model  # a cut inside an op's records (RMW, discard+flush) has none
    log = read_log(path)
    states = CrashStates(log, torn=torn, max_exhaustive=8, samples=24, seed=1)
    # exact durable/current content only where the rig does no read-modify-write above the log
    assert check_states_against_models(log, models, states, exact=lbs == 1) >= 1


def reference_images(ops: Sequence[Op], size: int) -> set[bytes]:
    """Brute force, from the ops alone: after every prefix, every subset of the writes since the
    last flush (FUA ones always kept), applied in order."""
    out: set[bytes] = set()
    data_ops = [op for op in ops if not isinstance(op, Read)]
    for k in range(len(data_ops) + 1):
        prefix = data_ops[:k]
        last_flush = max((i for i, op in enumerate(prefix) if isinstance(op, Flush)), default=-1)
        optional = [i for i, op in enumerate(prefix)
                    if i > last_flush and not isinstance(op, Flush) and not getattr(op, "fua",
                                                                                      False)]
        for n in range(len(optional) + 1):
            for dropped in itertools.combinations(optional, n):
                model = DiskModel(size)
                for i, op in enumerate(prefix):
                    if i not in dropped:
                        apply_to_model(op, model)
                out.add(model.read(0, size))
    return out


@settings(max_examples=60, deadline=None)
@given(ops=workloads(2048, 1, 700, max_ops=8, mix={"write": 4, "write_fua": 1,
                                                   "write_zeroes": 1, "discard": 1, "flush": 1}))
def test_exhaustive_enumeration_is_the_brute_force_set_and_counts_by_the_formula(
        tmp_path_factory: pytest.TempPathFactory, ops: list[Op]) -> None:
    path = tmp_path_factory.mktemp("x") / "w.wlog"
    for _ in recorded(path, ops, 2048):
        pass
    log = read_log(path)
    states = CrashStates(log)
    listed = list(states)
    assert len(listed) == len(set(listed)) == states.count()
    formula = sum(2 ** len(plan.pending) for plan in states.plans)
    assert states.count() == formula
    assert {states.image(s) for s in listed} == reference_images(ops, 2048)
    torn = CrashStates(log, torn=True, max_exhaustive=64)
    assert torn.count() == sum(2 ** sum(len({s for lo, hi in p.visible
                                             for s in range(lo // 512, (hi - 1) // 512 + 1)})
                                        for p in plan.pending) for plan in torn.plans)


def test_large_logs_are_sampled_reproducibly(tmp_path: Path) -> None:
    script: list[tuple[Any, ...]] = [("write", i * 100, bytes([i + 1]) * 300, {})
                                     for i in range(30)]
    log = make_log(tmp_path / "big.wlog", 4096, [*script, ("flush", {}), *script[:3]])
    first = list(CrashStates(log, seed=5, samples=50))
    assert first == list(CrashStates(log, seed=5, samples=50))
    assert first != list(CrashStates(log, seed=6, samples=50))
    states = CrashStates(log, seed=5, samples=50)
    assert not states.exhaustive()
    assert len(first) == len(set(first)) == states.count() == 50 + 2**3
    assert first[0] == CrashState(30) and first[1] == CrashState(30, tuple(range(1, 31)))
    model = DiskModel(4096)
    for i in range(30):
        model.write(i * 100, bytes([i + 1]) * 300)
    for state in first[:50]:
        assert model.power_cut_violations(0, states.image(state)) == []
    torn = list(CrashStates(log, torn=True, seed=5, samples=40))
    assert any(s.torn for s in torn) and any(s.keep for s in torn)


# ------------------------------------------------------------------------ the writecache filter
def cut_writecache(path: Path, ops: Sequence[Op], seed: int, cache: str = "writeback",
                   size: int = 2048) -> tuple[bytes, WriteLog]:
    """Run ``ops`` on recorder -> writecache -> memory, cut the power (random policy, ``seed``);
    return the device content and the log.

    The memory node has 512-byte sectors, as a disk: on a byte-addressable one a FUA write can
    split a cached request inside a sector, and the filter then tears the two parts apart, which
    the enumeration (sectors are atomic) does not produce (docs/crash.md).
    """
    media = {"driver": "memory", "size": size, "logical-block-size": 512}
    spec = {"driver": "recorder", "log": str(path),
            "file": {"driver": "writecache", "file": media}}
    blk: BlockBackend
    with rig.open(spec, cache=cache) as blk:
        for op in ops:
            apply_to_backend(op, blk)
        rec = blk.root
        assert isinstance(rec, RecorderFilter)
        wc = rec.child
        assert isinstance(wc, WriteCacheFilter)
        wc.power_cut("random", seed=seed)
        content = blk.pread(0, size)
        rec.writer.sync()
        return content, read_log(path)


@settings(max_examples=60, deadline=None)
@given(ops=workloads(2048, 1, 900, max_ops=8, discard_align=512, mix={"write": 4, "write_fua": 1,
                                                   "write_zeroes": 1, "discard": 1, "flush": 1}),
       cache=cache_modes(), seed=st.integers(0, 2**32 - 1))
def test_every_writecache_power_cut_is_an_enumerated_state(
        tmp_path_factory: pytest.TempPathFactory, ops: list[Op], cache: str, seed: int) -> None:
    path = tmp_path_factory.mktemp("wc") / "w.wlog"
    content, log = cut_writecache(path, ops, seed, cache)
    states = CrashStates(log, torn=True, max_exhaustive=12)
    assume(states.exhaustive())
    images = {states.image(s) for s in states if s.cut == log.last_seq}
    assert content in images
    for more in range(1, 6):  # the same workload, other cuts
        assert cut_writecache(path, ops, seed + more, cache)[0] in images


def test_a_writecache_cut_with_torn_and_fua_writes_is_found(tmp_path: Path) -> None:
    # A fixed case of the property above that exercises tearing and FUA supersession.
    ops: list[Op] = [Write(0, 1536, 1), Write(512, 512, 2, fua=True), WriteZeroes(1024, 1024),
                     Write(1500, 300, 3)]
    seen: set[bytes] = set()
    for seed in range(40):
        content, log = cut_writecache(tmp_path / f"{seed}.wlog", ops, seed)
        states = CrashStates(log, torn=True)
        assert states.cuts() == [1, 4]
        assert content in {states.image(s) for s in states if s.cut == 4}
        seen.add(content)
    assert len(seen) > 5  # the cuts were varied: this was not one trivial state
