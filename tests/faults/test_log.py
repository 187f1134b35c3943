"""The event log: JSON lines with a header (seed, rules), streaming, loading, bad files."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rig.errors import ConfigError
from rig.faults.engine import FaultEngine
from rig.faults.load import rules_from_data
from rig.faults.log import Event, FaultEventLog
from rig.faults.rules import Corrupt, Error, Rule, Torn


@st.composite
def events(draw: st.DrawFn) -> Event:
    """Events as the engine logs them: flipped bits inside the request, a torn write's landed
    bytes within it, an error with its errno (the loader refuses anything else)."""
    offset, length = draw(st.integers(0, 1 << 40)), draw(st.integers(0, 1 << 20))
    action = draw(st.sampled_from(["error", "torn", "corrupt", "delay"]))
    bits = draw(st.lists(st.integers(offset * 8, (offset + length) * 8 - 1), max_size=5)
                if length else st.just([]))
    return Event(seq=draw(st.integers(1, 10**6)), time=draw(st.floats(0, 1e6)),
                 op=draw(st.sampled_from(["read", "write"])), offset=offset, length=length,
                 rule=draw(st.text(max_size=10)), action=action,
                 errno=draw(st.integers(1 if action == "error" else 0, 200)),
                 delay=draw(st.floats(0, 10)), bits=tuple(bits),
                 landed=draw(st.none() | st.integers(0, length)),
                 state=draw(st.none() | st.integers(0, 9)))


@given(evs=st.lists(events(), max_size=20), seed=st.integers(0, 2**64))
def test_save_and_load_round_trip(tmp_path_factory: pytest.TempPathFactory, evs: list[Event],
                                  seed: int) -> None:
    log = FaultEventLog(seed, [{"action": "error"}])
    for e in evs:
        log.append(e)
    path = tmp_path_factory.mktemp("log") / "run.jsonl"
    log.save(path)
    back = FaultEventLog.load(path)
    assert back.seed == seed
    assert back.rules == [{"action": "error"}]
    assert [e.outcome() for e in back] == [e.outcome() for e in evs]
    assert [e.time for e in back] == pytest.approx([e.time for e in evs], abs=1e-8)


def test_the_file_says_what_fired_where_and_when(tmp_path: Path) -> None:
    engine = FaultEngine([Rule(Error("ENOSPC"), name="full", op="write", start=4096),
                          Rule(Torn(sectors=1), name="tear", op="write")], seed=42)
    engine.decide(1, "write", 0, 1024)
    engine.decide(2, "write", 8192, 512)
    engine.log.save(tmp_path / "run.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert lines[0]["format"] == "blockrig-faults-log"
    assert lines[0]["seed"] == 42
    assert rules_from_data(lines[0]["rules"]) == engine.rules()  # the header reloads as rules
    del lines[1]["time"], lines[2]["time"]
    assert lines[1:] == [
        {"seq": 1, "op": "write", "offset": 0, "length": 1024, "rule": "tear", "action": "torn",
         "errno": errno.EIO, "errno_name": "EIO", "landed": 512},
        {"seq": 2, "op": "write", "offset": 8192, "length": 512, "rule": "full",
         "action": "error", "errno": errno.ENOSPC, "errno_name": "ENOSPC"},
    ]


def test_streaming_writes_each_event_as_it_happens(tmp_path: Path) -> None:
    engine = FaultEngine([Rule(Corrupt(2), name="c")], seed=1)
    path = tmp_path / "live.jsonl"
    engine.log.stream_to(path)
    assert len(path.read_text().splitlines()) == 1
    engine.decide(1, "read", 0, 512)
    assert len(FaultEventLog.load(path)) == 1  # on disk before the log is closed
    engine.decide(2, "read", 0, 512)
    engine.close()
    assert [e.seq for e in FaultEventLog.load(path)] == [1, 2]


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty file"),
    ("{\"format\": \"other\"}\n", "line 1: not a fault log"),
    ("{\"format\": \"blockrig-faults-log\", \"version\": 9}\n", "unsupported version 9"),
    ("{\"format\": \"blockrig-faults-log\", \"version\": 1}\n{oops\n", "line 2: invalid JSON"),
    ("{\"format\": \"blockrig-faults-log\", \"version\": 1}\n{\"seq\": 1}\n",
     "line 2: not an event"),
    ("{\"format\": \"blockrig-faults-log\", \"version\": 1, \"seed\": \"x\"}\n",
     "'seed' must be a number"),
])
def test_bad_logs_are_config_errors_with_line_numbers(tmp_path: Path, text: str,
                                                      message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        FaultEventLog.load(path)


HEADER = json.dumps({"format": "blockrig-faults-log", "version": 1, "seed": 0, "rules": []})
EVENT = {"seq": 1, "time": 0.0, "op": "read", "offset": 0, "length": 512, "rule": "r",
         "action": "error", "errno": 5}


@pytest.mark.parametrize(("line", "message"), [
    (json.dumps({**EVENT, "errno": 99999999999}), "line 2: not an event: 'errno': expected"),
    (json.dumps({**EVENT, "action": "delay", "errno": 0, "delay": -1}), "'delay': expected"),
    (json.dumps({**EVENT, "op": "bogus"}), "'op': expected one of read, write"),
    (json.dumps(EVENT).replace('"offset": 0', '"offset": Infinity'), "line 2: invalid JSON"),
    (json.dumps(EVENT).replace('"offset": 0', '"offset": 1e400'), "'offset': expected a"),
    (json.dumps({**EVENT, "action": "corrupt", "bits": [1 << 20]}), "'bits': expected"),
    (json.dumps({**EVENT, "action": "torn", "landed": 4096}), "'landed': expected"),
    (json.dumps({**EVENT, "seq": [1]}), "'seq': expected an integer"),
    (json.dumps({**EVENT, "errno": 0}), "needs the errno it failed with"),
    (json.dumps({**EVENT, "extra": 1}), "'extra': not an event key"),
    ("[" * 100 + "]" * 100, "nested more than"),
])
def test_hostile_events_are_refused_when_the_log_is_loaded(tmp_path: Path, line: str,
                                                           message: str) -> None:
    """Each of these loaded before and crashed the replay at its first request (or loading)."""
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{HEADER}\n{line}\n")
    with pytest.raises(ConfigError, match=message) as e:
        FaultEventLog.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_non_utf8_byte_is_named_by_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(HEADER.encode() + b"\n" + json.dumps(EVENT).encode().replace(
        b'"r"', b'"\xff"') + b"\n")
    with pytest.raises(ConfigError, match=r"bad.jsonl: line 2: not UTF-8 text"):
        FaultEventLog.load(path)


def test_a_scsi_event_is_refused_when_the_replay_is_built(tmp_path: Path) -> None:
    from rig.faults.fault_replay import Replayer

    path = tmp_path / "scsi.jsonl"
    path.write_text(f"{HEADER}\n{json.dumps({**EVENT, 'op': 'scsi-28', 'action': 'x'})}\n")
    assert len(FaultEventLog.load(path)) == 1  # a valid log
    with pytest.raises(ConfigError, match="op 'scsi-28' cannot be replayed"):
        Replayer(path)
