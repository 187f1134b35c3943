"""The direct path changes nothing anyone can see: the same random requests, rules armed and
states changed between them, served once through the direct path wherever the graph allows it
(the I/O done by hand on the descriptor it gives, as the export does) and once through the graph
only, give the same data, the same errors, the same request numbers and rule counters in the
``faults`` filter, the same statistics and the same image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import rig
from rig.core.backend import BlockBackend
from rig.faults.rules import Error, Rule
from rig.filters.faults import FaultsFilter
from tests.fuzzing import EXAMPLES, profile

SIZE = 64 * 1024
BLOCK = 512

_span = st.tuples(st.integers(0, SIZE // BLOCK - 1), st.integers(1, 16))
_op = st.one_of(
    st.tuples(st.just("read"), _span),
    st.tuples(st.just("write"), _span, st.integers(1, 255)),
    st.tuples(st.just("rule"), st.sampled_from(["read", "write"]), _span,
              st.none() | st.integers(0, 2)),
    st.tuples(st.just("state"), st.integers(0, 2)),
)


def _clip(span: tuple[int, int]) -> tuple[int, int]:
    first, count = span
    count = min(count, SIZE // BLOCK - first)
    return first * BLOCK, count * BLOCK


def _apply(blk: BlockBackend, op: tuple[Any, ...], n: int, direct: bool) -> Any:
    f = blk.root
    assert isinstance(f, FaultsFilter)
    kind = op[0]
    if kind == "rule":
        start, length = _clip(op[2])
        f.add_rule(Rule(Error("EIO"), name=f"r{n}", op=op[1], start=start, end=start + length,
                        state=op[3]))
        return None
    if kind == "state":
        f.state = op[1]
        return None
    offset, length = _clip(op[1])
    write = kind == "write"
    buf = bytearray(bytes([op[2]]) * length if write else length)
    plan = blk.direct(write, offset, length) if direct else None
    if plan is not None:
        _, fd, file_offset, tracked = plan
        done = (os.pwritev if write else os.preadv)(fd, [buf], file_offset)
        assert done == length
        blk.direct_done(write, offset, length, 0, tracked)
        return ("direct", bytes(buf))
    try:
        (blk.pwritev if write else blk.preadv)(offset, [memoryview(buf)])
    except OSError as e:
        return ("error", e.errno)
    return ("ok", bytes(buf))


def _seen(blk: BlockBackend) -> tuple[Any, ...]:
    f = blk.root
    assert isinstance(f, FaultsFilter)
    stats = tuple((k, s.ops, s.bytes, s.failed) for k, s in sorted(blk.stats.by_op.items()))
    return f.seq, tuple(sorted(f.counters().items())), stats, blk.stats.wr_highest_offset


@settings(max_examples=EXAMPLES[profile()], deadline=None)
@given(ops=st.lists(_op, max_size=30))
def test_the_direct_path_is_the_graph_path(tmp_path_factory: Any, ops: list[Any]) -> None:
    tmp: Path = tmp_path_factory.mktemp("twins")
    images = [tmp / "direct.img", tmp / "graph.img"]
    for img in images:
        img.write_bytes(bytes(range(256)) * (SIZE // 256))
    specs = [{"driver": "faults", "file": {"driver": "file", "filename": str(img)}}
             for img in images]
    used_direct = 0
    with rig.open(specs[0]) as via_direct, rig.open(specs[1]) as via_graph:
        for n, op in enumerate(ops):
            a = _apply(via_direct, op, n, direct=True)
            b = _apply(via_graph, op, n, direct=False)
            if a is not None and a[0] == "direct":
                used_direct += 1
                a = ("ok", a[1])
            assert a == b, (n, op)
            assert _seen(via_direct) == _seen(via_graph), (n, op)
    assert images[0].read_bytes() == images[1].read_bytes()
    if any(op[0] in ("read", "write") for op in ops) and not any(op[0] == "rule" for op in ops):
        assert used_direct > 0  # with no rule at all, requests do take the direct path
