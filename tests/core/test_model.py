"""DiskModel: reads, durability by flush and FUA, and what a power cut may leave behind."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rig.testing.model import DiskModel
from rig.testing.ops import Flush, Op, Read, apply_to_model
from rig.testing.strategies import io_ops


def values(model: DiskModel, offset: int, length: int) -> list[set[int]]:
    return [set(s) for s in model.possible_after_power_cut(offset, length)]


def test_reads_return_the_latest_write_zero_and_discard() -> None:
    m = DiskModel(16, initial=b"0123456789abcdef")
    m.write(2, b"XY")
    m.zero(5, 2)
    m.discard(10, 3)
    assert m.read(0, 16) == b"01XY4\0\x00789\0\0\0def"
    assert m.durable() == b"0123456789abcdef"


def test_unflushed_writes_may_or_may_not_survive() -> None:
    m = DiskModel(4)
    m.write(0, b"\x01\x02")
    m.write(1, b"\x03")
    assert m.dirty
    assert values(m, 0, 4) == [{0, 1}, {0, 2, 3}, {0}, {0}]


def test_flush_makes_everything_durable() -> None:
    m = DiskModel(4)
    m.write(0, b"\x01\x02")
    m.flush()
    assert not m.dirty
    assert values(m, 0, 4) == [{1}, {2}, {0}, {0}]
    m.write(0, b"\x05")
    assert values(m, 0, 2) == [{1, 5}, {2}]


def test_fua_write_is_durable_and_supersedes_cached_writes_it_covers() -> None:
    m = DiskModel(10)
    m.write(0, b"a" * 10)
    m.write(3, b"b" * 3, fua=True)
    a, b = ord("a"), ord("b")
    assert values(m, 0, 10) == [{0, a}] * 3 + [{b}] * 3 + [{0, a}] * 4
    assert m.durable() == bytes(3) + b"bbb" + bytes(4)
    m.zero(4, 1, fua=True)
    assert values(m, 3, 3) == [{b}, {0}, {b}]


def test_power_cut_accepts_torn_content_and_makes_it_durable() -> None:
    m = DiskModel(6, initial=b"oooooo")
    m.write(0, b"nnnnnn")
    torn = b"nonono"
    assert m.power_cut_violations(0, torn) == []
    m.power_cut(torn)
    assert m.read(0, 6) == torn
    assert m.durable() == torn
    assert not m.dirty


def test_power_cut_rejects_bytes_nobody_wrote() -> None:
    m = DiskModel(6, initial=b"oooooo")
    m.write(0, b"nn")
    bad = m.power_cut_violations(0, b"nnxooz")
    assert [(v.offset, chr(v.observed)) for v in bad] == [(2, "x"), (5, "z")]
    assert bad[0].allowed == frozenset({ord("o")})
    with pytest.raises(AssertionError, match="byte 2: read 0x78"):
        m.power_cut(b"nnxooz")
    assert m.read(0, 6) == b"nnoooo"  # a rejected power cut changes nothing


def test_after_flush_only_the_current_content_survives() -> None:
    m = DiskModel(4, initial=b"aaaa")
    m.write(0, b"bbbb")
    m.flush()
    assert [v.offset for v in m.power_cut_violations(0, b"abba")] == [0, 3]


def test_violation_reports_are_limited() -> None:
    m = DiskModel(100)
    assert len(m.power_cut_violations(0, b"\xff" * 100, limit=3)) == 3


@pytest.mark.parametrize(("offset", "length"), [(-1, 1), (0, 11), (10, 1), (5, -1)])
def test_out_of_range_is_a_value_error(offset: int, length: int) -> None:
    m = DiskModel(10)
    with pytest.raises(ValueError, match="outside the model"):
        m.read(offset, length)
    with pytest.raises(ValueError, match="outside the model"):
        m.possible_after_power_cut(offset, length)


def test_initial_content_must_match_the_size() -> None:
    with pytest.raises(ValueError, match="initial content"):
        DiskModel(4, initial=b"abc")


@given(st.lists(io_ops(64, align=4, max_len=32), max_size=30))
def test_nothing_and_everything_written_back_are_both_possible(ops: list[Op]) -> None:
    m = DiskModel(64)
    for op in ops:
        if not isinstance(op, Read):
            apply_to_model(op, m)
    assert m.power_cut_violations(0, m.read(0, 64)) == []
    assert m.power_cut_violations(0, m.durable()) == []
    apply_to_model(Flush(), m)
    assert m.possible_after_power_cut(0, 64) == [frozenset({b}) for b in m.read(0, 64)]
