"""rig.qmp.framing: messages are cut where their JSON ends, whatever the chunks; garbage is
refused one item at a time and never held in memory beyond the bound."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from rig.qmp.framing import Garbage, Splitter
from tests.fuzzing import EXAMPLES, fuzz, profile


def split(data: bytes, **kw: int) -> list[bytes | Garbage]:
    return Splitter(**kw).feed(data)


def test_messages_span_lines_and_share_them() -> None:
    data = b'{"execute":\n "a"} {"execute": "b", "arguments": {"x": "}{\\""}}\n'
    assert split(data) == [b'{"execute":\n "a"}',
                           b'{"execute": "b", "arguments": {"x": "}{\\""}}']


def test_a_scalar_ends_at_the_newline_and_a_stray_closer_is_refused() -> None:
    assert split(b"nonsense\n42\n") == [b"nonsense", b"42"]
    out = split(b'} junk\n{"a": 1}')
    assert isinstance(out[0], Garbage) and out[1:] == [b'{"a": 1}']


def test_a_huge_message_is_refused_and_skipped_without_keeping_it() -> None:
    s = Splitter(max_bytes=1000)
    out = s.feed(b'{"x": "' + b"y" * 5000)
    assert len(out) == 1 and isinstance(out[0], Garbage) and "longer than 1000" in out[0].reason
    assert s.pending == 0
    assert s.feed(b'"}{"ok": 1}') == [b'{"ok": 1}']


def test_deep_nesting_is_refused() -> None:
    out = split(b"[" * 50 + b"]" * 50 + b'{"a": 1}', max_depth=10)
    assert isinstance(out[0], Garbage) and "deeper than 10" in out[0].reason
    assert out[1:] == [b'{"a": 1}']


def test_a_bad_byte_inside_a_message_is_refused_until_the_newline() -> None:
    out = split(b'{"a": @@@}\n{"b": 2}\n')
    assert isinstance(out[0], Garbage) and "0x40" in out[0].reason
    assert out[1:] == [b'{"b": 2}']


_SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
_VALUES = _SCALARS | st.lists(_SCALARS, max_size=3) | st.dictionaries(st.text(max_size=3),
                                                                      _SCALARS, max_size=2)


@given(st.lists(st.dictionaries(st.text(max_size=5), _VALUES, max_size=3), max_size=3),
       st.data())
@settings(fuzz, max_examples=max(50, EXAMPLES[profile()] // 4))  # valid input: fewer needed
def test_json_objects_come_out_whole_in_any_chunks(objs: list[dict[str, object]],
                                                   data: st.DataObject) -> None:
    stream = b"".join(json.dumps(o).encode() + b"\n" for o in objs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    s = Splitter()
    out: list[bytes | Garbage] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += s.feed(stream[a:b])
    assert [json.loads(m) for m in out if isinstance(m, bytes)] == objs
    assert s.pending == 0


@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=5))
@fuzz
def test_garbage_in_any_chunks_gives_the_same_items_and_stays_bounded(
        blob: bytes, cuts: list[int]) -> None:
    whole = Splitter(max_bytes=64, max_depth=8).feed(blob)
    s = Splitter(max_bytes=64, max_depth=8)
    pieces: list[bytes | Garbage] = []
    edges = sorted(min(c, len(blob)) for c in cuts)
    for a, b in zip([0, *edges], [*edges, len(blob)], strict=True):
        pieces += s.feed(blob[a:b])
        assert s.pending <= 65
    assert pieces == whole
    for item in whole:
        assert isinstance(item, Garbage) or len(item) <= 64
