"""Shrinking a failing crash state: the units of a cut and their round trip through state names,
then ddmin against fake checkers (pairs, any-of, torn sectors, the device content itself), the
memo, the budget and determinism, and Hypothesis properties (still fails, 1-minimal, a subset
of what the original dropped)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rig.crash.logfile import LogWriter, WriteLog, read_log
from rig.crash.shrink import ShrinkResult, ShrinkStep, shrink
from rig.crash.states import CrashState, CrashStates, Unit

SECTOR = 512
A, B, C, D = (bytes([c]) * 2048 for c in b"ABCD")


def make_log(path: Path, size: int, script: Sequence[tuple[Any, ...]]) -> WriteLog:
    """``script``: ``(method, *args, kwargs)`` calls on a LogWriter with 512-byte sectors."""
    with LogWriter(path, device_size=size, logical_block_size=SECTOR) as w:
        for step in script:
            getattr(w, step[0])(*step[1:-1], **step[-1])
    return read_log(path)


def many_in_flight(path: Path, n: int = 8) -> WriteLog:
    """A flushed write (record 1, flush 2), then ``n`` in-flight one-sector writes 3..n+2."""
    return make_log(path, 64 * 1024, [
        ("write", 0, A, {}), ("flush", {}),
        *[("write", 4096 + i * SECTOR, bytes([i + 1]) * SECTOR, {}) for i in range(n)],
    ])


def dropped_set(states: CrashStates) -> Callable[[CrashState], frozenset[Unit]]:
    return lambda s: frozenset(states.dropped(s))


def assert_one_minimal(states: CrashStates, result: ShrinkResult,
                       fails: Callable[[CrashState], bool]) -> None:
    assert fails(result.state), f"{result.state} no longer fails"
    for unit in result.dropped:
        back = [u for u in result.dropped if u != unit]
        again = states.with_dropped(result.state.cut, back)
        assert not fails(again), f"{again} (putting {unit} back) still fails"


# ------------------------------------------------------------------------ units and names
def test_units_dropped_and_with_dropped_on_a_small_log(tmp_path: Path) -> None:
    log = make_log(tmp_path / "u.wlog", 16 * 1024, [
        ("write", 0, A, {}),                        # 1: 4 sectors
        ("write", 1024, B[:1024], {"fua": True}),   # 2: covers sectors 2-3 of 1
        ("write", 4096, C[:1024], {}),              # 3: 2 sectors
        ("write", 8192, D[:512], {}),               # 4
    ])
    whole, torn = CrashStates(log), CrashStates(log, torn=True)
    assert whole.cuts() == [1, 4]
    assert whole.units(4) == [(1, -1), (3, -1), (4, -1)]
    assert torn.units(4) == [(1, 0), (1, 1), (3, 0), (3, 1), (4, 0)]
    assert torn.units(1) == [(1, 0), (1, 1), (1, 2), (1, 3)]
    assert torn.units(3) == [(1, 0), (1, 1), (3, 0), (3, 1)]  # any record, not only cut points
    state = CrashState.parse("cut 4 keep 4 torn 1[1],3[0]")
    assert torn.dropped(state) == [(1, 0), (3, 1)]
    assert torn.with_dropped(4, [(3, 1), (1, 0)]) == state
    assert torn.with_dropped(4, []) == CrashState(4, (1, 3, 4))
    assert torn.with_dropped(4, torn.units(4)) == CrashState(4)
    assert whole.with_dropped(4, [(3, -1)]) == CrashState(4, (1, 4))
    # sector 2 of record 1 is under the FUA write: no unit, changes nothing
    assert torn.dropped(CrashState.parse("cut 4 torn 1[0-2]")) == [(3, 0), (3, 1), (4, 0)]
    with pytest.raises(ValueError, match=r"records \[2\] are not in flight at cut 4"):
        torn.dropped(CrashState(4, (2,)))
    with pytest.raises(ValueError, match="not torn"):
        whole.dropped(state)
    with pytest.raises(ValueError, match=r"\(1, -1\) is not an in-flight unit of cut 4"):
        torn.with_dropped(4, [(1, -1)])
    with pytest.raises(ValueError, match="outside the log"):
        torn.units(9)


@settings(max_examples=30, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 15), st.integers(1, 4), st.integers(0, 9)),
                      min_size=1, max_size=10),
       torn=st.booleans())
def test_every_listed_state_round_trips_through_its_dropped_units(
        tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, int, int]],
        torn: bool) -> None:
    log = make_log(tmp_path_factory.mktemp("r") / "r.wlog", 16 * 512, script(steps))
    states = CrashStates(log, torn=torn, max_exhaustive=8, samples=20)
    for state in states:
        dropped = states.dropped(state)
        units = states.units(state.cut)
        assert [u for u in units if u in dropped] == dropped  # a subset, in log order
        assert states.with_dropped(state.cut, dropped) == state
        assert states.image(states.with_dropped(state.cut, reversed(dropped))) == \
            states.image(state)


def script(steps: list[tuple[int, int, int]]) -> list[tuple[Any, ...]]:
    """Writes of ``n`` sectors at sector ``at``; ``kind`` 0 is a FUA write, 1 a flush after the
    write, the rest plain writes."""
    out: list[tuple[Any, ...]] = []
    for i, (at, n, kind) in enumerate(steps):
        out.append(("write", at * SECTOR, bytes([i + 1]) * (n * SECTOR) if at + n <= 16
                    else bytes([i + 1]) * ((16 - at) * SECTOR), {"fua": kind == 0}))
        if kind == 1:
            out.append(("flush", {}))
    return out


# ------------------------------------------------------------------------ ddmin, by hand
def test_a_pair_of_dropped_writes_is_found(tmp_path: Path) -> None:
    states = CrashStates(many_in_flight(tmp_path / "p.wlog"))
    cut = states.cuts()[-1]
    original = CrashState(cut)  # drops all eight
    x, y = (4, -1), (9, -1)
    seen = dropped_set(states)

    def fails(s: CrashState) -> bool:
        return {x, y} <= seen(s)

    result = shrink(states, original, fails)
    assert result.dropped == (x, y) and result.minimal
    assert result.state == CrashState(cut, (3, 5, 6, 7, 8, 10))
    assert result.original == original and result.original_dropped == 8
    assert 0 < result.calls < 2**8
    assert str(result) == (f"{result.state}: drops 2 of the 8 units that {original} drops "
                           f"({result.calls} checks, 1-minimal)")
    assert_one_minimal(states, result, fails)


def test_any_of_a_set_shrinks_to_its_last_member_in_log_order(tmp_path: Path) -> None:
    states = CrashStates(many_in_flight(tmp_path / "a.wlog", 12))
    cut = states.cuts()[-1]
    culprits = {(13, -1), (7, -1), (11, -1)}
    seen = dropped_set(states)
    result = shrink(states, CrashState(cut, (3,)), lambda s: bool(culprits & seen(s)))
    assert result.dropped == ((13, -1),) and result.minimal  # chunks go back from the front
    # a smaller original: only what it dropped is searched
    result = shrink(states, states.with_dropped(cut, [(11, -1), (12, -1), (13, -1)]),
                    lambda s: bool(culprits & seen(s)))
    assert result.dropped == ((13, -1),)
    result = shrink(states, states.with_dropped(cut, [(7, -1), (8, -1), (9, -1)]),
                    lambda s: bool(culprits & seen(s)))
    assert result.dropped == ((7, -1),) and result.calls == 4  # none; without 7, 8, 9 each


def test_single_units_go_back_until_none_can_for_a_non_monotone_checker(tmp_path: Path) -> None:
    """Putting c back fails first; once b is back too, a can go back: a second pass finds it."""
    states = CrashStates(many_in_flight(tmp_path / "q.wlog", 3))
    a, b, c = states.units(states.cuts()[-1])
    failing = {frozenset(x) for x in ([a, b, c], [a, c], [c])}
    seen = dropped_set(states)
    result = shrink(states, CrashState(states.cuts()[-1]), lambda s: seen(s) in failing)
    assert result.dropped == (c,) and result.minimal and result.calls == 5


def test_torn_sectors_shrink_to_the_one_the_checker_reads(tmp_path: Path) -> None:
    """A checker that reads the device: bytes [1024, 1536) must hold record 3's data."""
    log = make_log(tmp_path / "t.wlog", 16 * 1024, [
        ("write", 0, A, {}), ("flush", {}),     # 1, 2: durable
        ("write", 0, B, {}),                    # 3: four sectors in flight
        ("write", 4096, C[:1024], {}),          # 4
        ("write", 8192, D[:512], {}),           # 5
    ])

    def fails_on(states: CrashStates) -> Callable[[CrashState], bool]:
        return lambda s: states.image(s)[1024:1536] != B[:512]

    torn = CrashStates(log, torn=True)
    result = shrink(torn, CrashState(5), fails_on(torn))
    assert result.dropped == ((3, 2),) and result.original_dropped == 7
    assert str(result.state) == "cut 5 keep 4,5 torn 3[0-1,3]"
    assert_one_minimal(torn, result, fails_on(torn))
    whole = CrashStates(log)
    result = shrink(whole, CrashState(5, (4,)), fails_on(whole))
    assert result.dropped == ((3, -1),) and result.state == CrashState(5, (4, 5))


def test_a_state_failing_with_nothing_dropped_shrinks_to_that(tmp_path: Path) -> None:
    states = CrashStates(many_in_flight(tmp_path / "n.wlog"))
    cut = states.cuts()[-1]
    result = shrink(states, CrashState(cut), lambda s: True)
    assert result.dropped == () and result.calls == 1 and result.minimal
    assert result.state == CrashState(cut, tuple(range(3, 11)))
    # nothing dropped to begin with: nothing to call
    result = shrink(states, result.state, lambda s: pytest.fail("called"))
    assert (result.calls, result.minimal, result.state) == (0, True, result.original)


def test_each_set_is_checked_once_the_original_never_and_runs_repeat(tmp_path: Path) -> None:
    states = CrashStates(many_in_flight(tmp_path / "m.wlog", 10), torn=True)
    cut = states.cuts()[-1]
    seen = dropped_set(states)
    calls: dict[CrashState, int] = {}

    def fails(s: CrashState) -> bool:
        calls[s] = calls.get(s, 0) + 1
        d = seen(s)
        return len(d) % 3 == 0 or ((5, 0) in d and (9, 0) in d)  # not monotone

    steps: list[ShrinkStep] = []
    first = shrink(states, CrashState(cut), fails, on_step=steps.append)
    assert max(calls.values()) == 1 and CrashState(cut) not in calls
    assert first.calls == len(calls) == len(steps)
    assert [s.call for s in steps] == list(range(1, first.calls + 1))
    assert [s.tried for s in steps] == list(calls)
    assert all(s.failed == fails(s.tried) for s in steps)
    best = [s.best_dropped for s in steps]
    assert best == sorted(best, reverse=True) and steps[-1].best == first.state
    assert_one_minimal(states, first, fails)
    again: list[ShrinkStep] = []
    assert shrink(states, CrashState(cut), fails, on_step=again.append) == first
    assert again == steps


def test_the_budget_caps_the_calls_and_keeps_the_best_so_far(tmp_path: Path) -> None:
    states = CrashStates(many_in_flight(tmp_path / "b.wlog", 16))
    cut = states.cuts()[-1]
    seen = dropped_set(states)

    def fails(s: CrashState) -> bool:
        return {(5, -1), (17, -1)} <= seen(s)

    full = shrink(states, CrashState(cut), fails)
    assert full.minimal and full.calls > 3
    for budget in range(full.calls + 2):
        result = shrink(states, CrashState(cut), fails, budget=budget)
        assert result.calls == min(budget, full.calls)
        assert result.minimal == (budget >= full.calls)
        assert fails(result.state)
        assert set(result.dropped) <= set(states.dropped(CrashState(cut)))
    assert shrink(states, CrashState(cut), fails, budget=0).state == CrashState(cut)
    with pytest.raises(ValueError, match="budget must be >= 0"):
        shrink(states, CrashState(cut), fails, budget=-1)


def test_verify_checks_the_original_first(tmp_path: Path) -> None:
    states = CrashStates(many_in_flight(tmp_path / "v.wlog", 4))
    cut = states.cuts()[-1]
    with pytest.raises(ValueError, match=f"state cut {cut} does not fail"):
        shrink(states, CrashState(cut), lambda s: False, verify=True)
    result = shrink(states, CrashState(cut), lambda s: True, verify=True)
    assert result.calls == 2 and result.dropped == ()  # itself, then keeping everything


def test_an_error_in_the_checker_is_raised(tmp_path: Path) -> None:
    states = CrashStates(many_in_flight(tmp_path / "e.wlog", 4))

    def broken(s: CrashState) -> bool:
        raise OSError("the checker could not run")

    with pytest.raises(OSError, match="could not run"):
        shrink(states, CrashState(states.cuts()[-1]), broken)


# ------------------------------------------------------------------------ properties
@st.composite
def predicates(draw: st.DrawFn, original: list[Unit]) -> tuple[str, Callable[
        [frozenset[Unit]], bool], list[frozenset[Unit]]]:
    """A checker over the dropped set that fails on ``original``: monotone (fails iff one of a
    few sets is dropped) or arbitrary (a seeded coin per set)."""
    if draw(st.booleans()):
        family = [frozenset(draw(st.lists(st.sampled_from(original), min_size=1, max_size=3)))
                  for _ in range(draw(st.integers(1, 3)))]
        return "monotone", lambda d: any(f <= d for f in family), family
    seed, p = draw(st.integers(0, 2**32)), draw(st.sampled_from([0.1, 0.3, 0.6]))
    top = frozenset(original)

    def coin(d: frozenset[Unit]) -> bool:
        return d == top or random.Random(f"{seed}:{sorted(d)}").random() < p

    return "arbitrary", coin, []


@settings(max_examples=80, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 15), st.integers(1, 4), st.integers(0, 9)),
                      min_size=1, max_size=12),
       torn=st.booleans(), data=st.data())
def test_the_shrunk_state_fails_is_one_minimal_and_drops_a_subset(
        tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, int, int]],
        torn: bool, data: st.DataObject) -> None:
    log = make_log(tmp_path_factory.mktemp("h") / "h.wlog", 16 * 512, script(steps))
    states = CrashStates(log, torn=torn)
    cut = data.draw(st.sampled_from(states.cuts()))
    units = states.units(cut)
    chosen = data.draw(st.lists(st.sampled_from(units), unique=True) if units else st.just([]))
    original = states.with_dropped(cut, chosen)
    dropped = states.dropped(original)
    kind, on_set, family = data.draw(predicates(dropped)) if dropped else (
        "any", lambda d: True, [])

    def fails(s: CrashState) -> bool:
        assert s.cut == cut
        return on_set(frozenset(states.dropped(s)))

    result = shrink(states, original, fails)
    assert result.minimal and result.state.cut == cut
    assert set(result.dropped) <= set(dropped)
    assert list(result.dropped) == states.dropped(result.state)
    assert_one_minimal(states, result, fails)
    if kind == "monotone":
        assert frozenset(result.dropped) in family
    budget = data.draw(st.integers(0, result.calls + 1))
    capped = shrink(states, original, fails, budget=budget)
    assert capped.calls <= budget and fails(capped.state)
    assert capped == result if budget >= result.calls else not capped.minimal
