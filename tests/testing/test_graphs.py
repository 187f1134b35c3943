"""Graph and fault-rule strategies: every drawn graph opens and behaves, rules are valid
blkdebug options, workloads follow their mix."""

from __future__ import annotations

import errno

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import rig
from rig.filters.blkdebug_events import EVENT_SET
from rig.testing.bundle import rules_of
from rig.testing.ops import Discard, Flush, Read, Write, WriteZeroes
from rig.testing.strategies import (
    blkdebug_rules,
    faulty_graph,
    faulty_graphs,
    graph_specs,
    memory_specs,
    workloads,
)

FAST = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(graph_specs(size=64 * 1024), st.binary(min_size=1, max_size=5000),
       st.integers(0, 60000))
def test_every_drawn_graph_opens_and_reads_back(spec: dict[str, object], data: bytes,
                                                offset: int) -> None:
    with rig.open(spec) as blk:
        assert blk.getlength() == 64 * 1024
        blk.pwrite(offset, data)
        assert blk.pread(offset, len(data)) == data


def test_graph_specs_reach_deep_stacks_and_every_layer() -> None:
    deep = find(graph_specs(max_layers=3), lambda s: str(s).count("'driver'") == 4,
                settings=settings(database=None, max_examples=500))
    assert deep["driver"] in ("raw", "blkdebug")
    aligned = find(graph_specs(), lambda s: s.get("align") == 4096 and "max-transfer" in s,
                   settings=settings(database=None, max_examples=500))
    assert aligned["max-transfer"] % 4096 == 0


def test_graph_spec_arguments_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="unknown layers"):
        graph_specs(layers=("throttle",)).example()
    with pytest.raises(InvalidArgument, match="multiple of 512"):
        memory_specs(size=1000).example()


@FAST
@given(blkdebug_rules(size=65536, max_rules=4, max_state=3))
def test_rule_sets_are_valid_blkdebug_options(rules: dict[str, list[dict[str, object]]]) -> None:
    assert rules.get("inject-error"), "min_rules=1 means at least one inject-error rule"
    for rule in rules["inject-error"]:
        assert rule["event"] in EVENT_SET
        assert 0 <= int(rule.get("sector", 0)) < 128  # type: ignore[call-overload]
    spec = faulty_graph({"driver": "memory", "size": 65536}, rules)
    rig.open(spec).close()  # blkdebug accepts them
    assert rules_of(spec) == [{"node": "file", **rules}]


@FAST
@given(faulty_graphs(size=65536, rules=blkdebug_rules(events=("read_aio",),
                                                      errnos=(errno.ENOSPC,), max_rules=1)))
def test_faulty_graphs_fail_as_their_rules_say(spec: dict[str, object]) -> None:
    rule = spec["file"]["inject-error"][0]  # type: ignore[index]
    with rig.open(spec) as blk:
        sector = rule.get("sector")
        offset = sector * 512 if sector is not None else 0
        if rule.get("iotype", "read") != "read":
            blk.pread(offset, 512)  # the rule never fires for reads
            return
        with pytest.raises(OSError) as exc:
            blk.pread(offset, 512)
        assert exc.value.errno == errno.ENOSPC


@FAST
@given(workloads(65536, 512, mix={"read": 1, "write_fua": 2}, min_ops=5, max_ops=10))
def test_workloads_follow_their_mix(ops: list[object]) -> None:
    assert 5 <= len(ops) <= 10
    for op in ops:
        assert isinstance(op, Read) or (isinstance(op, Write) and op.fua)


def test_default_workloads_hold_every_kind() -> None:
    kinds = (Read, Write, WriteZeroes, Discard, Flush)
    ops = find(workloads(65536, 512), lambda ops: all(any(isinstance(o, k) for o in ops)
                                                       for k in kinds),
               settings=settings(database=None, max_examples=500, phases=[Phase.generate]))
    assert len(ops) >= len(kinds)


def test_workload_mix_is_checked() -> None:
    with pytest.raises(InvalidArgument, match="unknown op kinds"):
        workloads(4096, mix={"trim": 1}).example()
    with pytest.raises(InvalidArgument, match="not all 0"):
        workloads(4096, mix={"read": 0}).example()
