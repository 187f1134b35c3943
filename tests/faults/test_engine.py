"""The rule engine on its own: each predicate fires exactly when it says, under generated request
sequences; order, once, live control, counters, and thread safety."""

from __future__ import annotations

import errno
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rig.errors import ConfigError
from rig.faults.engine import FaultEngine, draw
from rig.faults.rules import (
    Corrupt,
    Delay,
    Drop,
    Error,
    Gone,
    LyingFlush,
    Op,
    Rule,
    SetState,
    Torn,
)
from rig.faults.verdict import CORRUPT, DROP, FAIL, LIE, PASS, TORN, Verdict
from rig.testing.clock import VirtualClock

OPS = [op.value for op in Op]
Request = tuple[str, int, int]
requests = st.tuples(st.sampled_from(OPS), st.integers(0, 1 << 16), st.integers(0, 8192)).map(
    lambda r: (r[0], 0, 0) if r[0] == "flush" else r)


def run(engine: FaultEngine, reqs: list[Request]) -> list[Verdict]:
    return [engine.decide(seq, op, off, n) for seq, (op, off, n) in enumerate(reqs, start=1)]


def fired_seqs(engine: FaultEngine, rule: str) -> list[int]:
    return [e.seq for e in engine.log if e.rule == rule]


# ------------------------------------------------------------------------------ predicates
@given(reqs=st.lists(requests, max_size=60), ops=st.sets(st.sampled_from(OPS), min_size=1),
       start=st.integers(0, 1 << 16), length=st.integers(1, 1 << 14))
def test_op_and_range_fail_exactly_the_overlapping_requests(
        reqs: list[Request], ops: set[str], start: int, length: int) -> None:
    ops.discard("flush")
    if not ops:
        ops = {"read"}
    engine = FaultEngine([Rule(Error("EIO"), name="r", op=ops, start=start, end=start + length)])
    verdicts = run(engine, reqs)
    for (op, off, n), v in zip(reqs, verdicts, strict=True):
        overlaps = op in ops and off < start + length and off + n > start and n > 0
        assert v == (Verdict(FAIL, errno.EIO) if overlaps else PASS), (op, off, n)


@given(reqs=st.lists(requests, max_size=60), nth=st.integers(1, 10))
def test_nth_fires_on_exactly_the_nth_matching_request(reqs: list[Request], nth: int) -> None:
    engine = FaultEngine([Rule(Error(), name="r", op="write", nth=nth)])
    run(engine, reqs)
    writes = [seq for seq, (op, _, _) in enumerate(reqs, start=1) if op == "write"]
    assert fired_seqs(engine, "r") == writes[nth - 1:nth]
    assert engine.hits()["r"] == len(writes)


@given(reqs=st.lists(requests, max_size=60), every=st.integers(1, 5))
def test_every_fires_on_each_kth_matching_request(reqs: list[Request], every: int) -> None:
    engine = FaultEngine([Rule(Error(), name="r", op=("read", "zero"), every=every)])
    run(engine, reqs)
    matching = [seq for seq, (op, _, _) in enumerate(reqs, start=1) if op in ("read", "zero")]
    assert fired_seqs(engine, "r") == matching[every - 1::every]


@given(reqs=st.lists(requests, min_size=1, max_size=80), seed=st.integers(0, 2**32),
       p=st.floats(0, 1))
def test_probability_is_reproducible_for_a_seed(reqs: list[Request], seed: int, p: float) -> None:
    def once() -> list[int]:
        engine = FaultEngine([Rule(Error(), name="r", probability=p)], seed=seed)
        run(engine, reqs)
        return fired_seqs(engine, "r")

    assert once() == once()


@pytest.mark.parametrize("p", [0.05, 0.25, 0.95])
def test_probability_rate_is_about_p_and_the_seed_matters(p: float) -> None:
    n = 4000
    reqs: list[Request] = [("read", 0, 512)] * n
    patterns = []
    for seed in (1, 2):
        engine = FaultEngine([Rule(Error(), name="r", probability=p)], seed=seed)
        run(engine, reqs)
        fired = fired_seqs(engine, "r")
        sd = (n * p * (1 - p)) ** 0.5
        assert abs(len(fired) - n * p) <= 5 * sd
        patterns.append(fired)
    assert patterns[0] != patterns[1]
    assert all(0 <= draw(7, "x", n) < 1 for n in range(100))


def test_probability_draws_of_a_rule_do_not_depend_on_other_rules() -> None:
    reqs: list[Request] = [("write", 4096 * i, 4096) for i in range(200)]
    alone = FaultEngine([Rule(Delay(0), name="p", probability=0.3)], seed=9)
    run(alone, reqs)
    crowded = FaultEngine([Rule(Delay(0), name="x", probability=0.5),
                           Rule(Delay(0), name="p", probability=0.3),
                           Rule(Delay(0), name="y", start=0, end=40960)], seed=9)
    run(crowded, reqs)
    assert fired_seqs(alone, "p") == fired_seqs(crowded, "p")


def test_requests_touching_a_range_do_not_match() -> None:
    engine = FaultEngine([Rule(Error(), name="r", start=4096, end=8192)])
    reqs: list[Request] = [("write", 0, 4096), ("write", 8192, 512), ("read", 4096, 0),
                           ("zero", 4095, 2), ("discard", 8191, 1)]
    assert [v.kind for v in run(engine, reqs)] == ["forward"] * 3 + [FAIL] * 2


def test_state_machine_fail_the_second_write_after_a_flush() -> None:
    """blkdebug's classic: a set-state rule on flush arms an error rule for state 2."""
    engine = FaultEngine([
        Rule(SetState(), name="arm", op="flush", state=1, new_state=2),
        Rule(Error("EIO"), name="fail", op="write", state=2, nth=2, new_state=3),
    ])
    reqs: list[Request] = [("write", 0, 512), ("write", 0, 512), ("flush", 0, 0),
                           ("write", 0, 512), ("write", 0, 512), ("write", 0, 512),
                           ("flush", 0, 0), ("write", 0, 512)]
    verdicts = run(engine, reqs)
    assert [i + 1 for i, v in enumerate(verdicts) if v.kind == FAIL] == [5]
    assert engine.state == 3
    assert engine.counters() == {"arm": 1, "fail": 1}
    assert [e.state for e in engine.log] == [2, 3]


def test_state_is_read_before_the_request_changes_it() -> None:
    engine = FaultEngine([Rule(SetState(), name="s", new_state=2),
                          Rule(Error(), name="e", state=2)])
    assert run(engine, [("read", 0, 1), ("read", 0, 1)]) == [PASS, Verdict(FAIL, errno.EIO)]


def test_time_window_uses_the_injected_clock() -> None:
    clock = VirtualClock(1000.0)
    engine = FaultEngine([Rule(Error(), name="w", after=10, before=20)], clock=clock)
    seen = []
    for t in (0, 9.999, 10, 15, 19.999, 20, 30):
        clock.advance(t - engine.elapsed())
        seen.append(engine.decide(1, "read", 0, 512).kind == FAIL)
    assert seen == [False, False, True, True, True, False, False]


def test_delays_add_up_are_slept_on_the_clock_and_do_not_stop_matching() -> None:
    clock = VirtualClock()
    engine = FaultEngine([Rule(Delay(0.25), name="d1"), Rule(Delay(1.5), name="d2", op="read"),
                          Rule(Error("ENOSPC"), name="e", op="read")], clock=clock)
    assert engine.decide(1, "read", 0, 512) == Verdict(FAIL, errno.ENOSPC)
    assert clock.sleeps == [1.75]
    assert engine.decide(2, "write", 0, 512) == PASS
    assert clock.sleeps == [1.75, 0.25]
    assert [(e.rule, e.delay) for e in engine.log] == [("d1", 0.25), ("d2", 1.5), ("e", 0),
                                                       ("d1", 0.25)]


# --------------------------------------------------------------------------------- actions
def test_each_action_gives_its_verdict() -> None:
    def verdict(rule: Rule, op: str = "write", off: int = 1024, n: int = 4096) -> Verdict:
        return FaultEngine([rule], seed=3).decide(1, op, off, n)

    assert verdict(Rule(Error(28))) == Verdict(FAIL, 28)
    assert verdict(Rule(Drop())) == Verdict(DROP)
    assert verdict(Rule(LyingFlush()), "flush", 0, 0) == Verdict(LIE)
    assert verdict(Rule(Torn(sectors=2, ack=True))) == Verdict(TORN, 0, landed=1024)
    assert verdict(Rule(Torn(sectors=2)), off=1100) == Verdict(TORN, errno.EIO, landed=948)
    assert verdict(Rule(Torn(sectors=2, unit=1024, errno="EROFS"))) == Verdict(
        TORN, errno.EROFS, landed=2048)
    v = verdict(Rule(Corrupt(5), start=2048, end=3072), "read")
    assert v.kind == CORRUPT and len(v.bits) == 5
    assert all(2048 * 8 <= b < 3072 * 8 for b in v.bits)
    assert verdict(Rule(Corrupt(5), start=2048, end=3072), "read") == v  # seeded


def test_corrupt_never_flips_more_bits_than_the_window_has() -> None:
    v = FaultEngine([Rule(Corrupt(100), start=10, end=11)]).decide(1, "read", 0, 512)
    assert v.bits == tuple(range(80, 88))


def test_gone_fails_everything_after_until_revived() -> None:
    engine = FaultEngine([Rule(Gone(), name="g", op="write", nth=2)])
    reqs: list[Request] = [("read", 0, 1), ("write", 0, 1), ("read", 0, 1), ("write", 0, 1),
                           ("flush", 0, 0), ("discard", 0, 1)]
    verdicts = run(engine, reqs)
    assert [v.errno for v in verdicts] == [0, 0, 0] + [errno.ENODEV] * 3
    assert engine.counters() == {"g": 1}
    assert engine.gone == errno.ENODEV
    assert len(engine.log) == 3
    engine.revive()
    assert engine.decide(7, "read", 0, 1) == PASS


def test_first_terminal_rule_wins_and_later_ones_only_count() -> None:
    engine = FaultEngine([Rule(Error("EIO"), name="a", op="read"),
                          Rule(Error("ENOSPC"), name="b")])
    assert engine.decide(1, "read", 0, 1).errno == errno.EIO
    assert engine.counters() == {"a": 1, "b": 0}
    assert engine.hits() == {"a": 1, "b": 1}
    engine.add_rule(Rule(Error("EROFS"), name="c"), first=True)
    assert engine.decide(2, "read", 0, 1).errno == errno.EROFS
    assert [r.name for r in engine.rules()] == ["c", "a", "b"]


def test_ranged_and_unranged_rules_keep_one_order() -> None:
    engine = FaultEngine([Rule(Error("EIO"), name="ranged", start=0, end=100),
                          Rule(Error("ENOSPC"), name="all")])
    assert engine.decide(1, "read", 50, 10).errno == errno.EIO
    assert engine.decide(2, "read", 100, 10).errno == errno.ENOSPC


# ---------------------------------------------------------------------------- live control
def test_once_disarms_and_enable_rearms() -> None:
    engine = FaultEngine([Rule(Error(), name="o", op="read", once=True)])
    assert run(engine, [("read", 0, 1)] * 3) == [Verdict(FAIL, errno.EIO), PASS, PASS]
    assert not engine.enabled("o")
    assert engine.armed == frozenset()
    engine.enable("o")
    assert engine.armed == {"read"}
    assert engine.decide(4, "read", 0, 1).kind == FAIL
    assert engine.counters() == {"o": 2}


def test_add_remove_enable_disable() -> None:
    engine = FaultEngine()
    assert engine.armed == frozenset()
    name = engine.add_rule(Rule(Error(), op="write"))
    assert name == "rule-0"
    assert engine.add_rule(Rule(Error(), op="read", start=0, end=10)) == "rule-1"
    assert engine.armed == {"read", "write"}
    engine.disable("rule-1")
    assert engine.armed == {"write"}
    assert engine.decide(1, "read", 0, 5) == PASS
    engine.enable("rule-1")
    assert engine.decide(2, "read", 0, 5).kind == FAIL
    assert engine.remove_rule("rule-0") == Rule(Error(), name="rule-0", op="write")
    assert engine.armed == {"read"}
    with pytest.raises(ConfigError, match="no rule named 'rule-0'"):
        engine.disable("rule-0")
    with pytest.raises(ConfigError, match="already exists"):
        engine.add_rule(Rule(Drop(), name="rule-1"))
    engine.reset_counters()
    assert engine.counters() == {"rule-1": 0}


def test_concurrent_requests_and_edits_keep_exact_counts() -> None:
    engine = FaultEngine([Rule(Delay(0), name="all")])
    n_threads, per_thread = 8, 500

    def worker(k: int) -> None:
        for i in range(per_thread):
            engine.decide(k * per_thread + i + 1, "write", i * 512, 512)
            if k == 0 and i % 50 == 0:  # live edits while others match
                name = engine.add_rule(Rule(Delay(0), start=0, end=512))
                engine.remove_rule(name)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert engine.counters()["all"] == n_threads * per_thread
    assert len({e.seq for e in engine.log if e.rule == "all"}) == n_threads * per_thread
