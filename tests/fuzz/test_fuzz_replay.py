"""Garbage at fault event logs and their replay (issue 18 part 4).

A real log is recorded by a ``faults`` filter (errors, a delay, corrupted reads, a torn write,
dropped writes, a lying flush, a state change, a vanishing device) over a fixed workload. Then
one event has one field replaced by a hostile value (huge, negative, NaN/inf, wrong types, an
unknown op or action), a key removed or added, or the file's bytes damaged (bad UTF-8, cut
short, a line of garbage), and the same workload is replayed from it, strictly and loosely.

The contract: the log loads, or the rig's own error with a one-line message naming the file and
line; a log that loads replays with nothing but injected ``OSError``s and
:class:`~rig.faults.fault_replay.ReplayDivergence` (never a crash inside a request, never a hang:
the replay's clock is virtual, so a delay of 1e6 s costs nothing).
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rig.core.backend import BlockBackend
from rig.errors import RigError
from rig.faults import Corrupt, Delay, Drop, Error, Gone, LyingFlush, Rule, SetState, Torn
from rig.faults.fault_replay import Replayer
from rig.faults.log import FaultEventLog
from rig.filters.faults import FaultsFilter
from rig.nodes.memory import MemoryNode
from rig.testing.clock import VirtualClock
from tests.fuzzing import fuzz, one_line

pytestmark = pytest.mark.fuzz

SIZE = 64 * 1024
KEYS = ["seq", "time", "op", "offset", "length", "rule", "action", "errno", "delay", "bits",
        "landed", "state", "errno_name"]
HOSTILE: list[Any] = [
    0, 1, -1, 4095, 4096, 99999999999, 2**63 - 1, 2**63, 2**64, -(2**63), 10**30, 0.5, -0.0,
    1e300, -1e300, math.inf, -math.inf, math.nan, True, False, None, "", "5", "EIO", "bogus",
    "read", "write", "flush", "scsi-28", "error", "torn", "gone", "x" * 1000, "\udc80", [],
    [1], [-1], [2**70], [0.5], ["a"], {}, {"a": 1},
]


def workload(blk: BlockBackend) -> None:
    """The same requests, recorded and replayed; injected errors are part of the run."""
    steps: list[Callable[[], object]] = [
        lambda: blk.pread(0, 4096), lambda: blk.pwrite(4096, b"a" * 4096),
        lambda: blk.pread(0, 4096), lambda: blk.pwrite(8192, b"b" * 4096),
        lambda: blk.flush(), lambda: blk.pread(8192, 512), lambda: blk.discard(0, 4096),
        lambda: blk.pwrite(0, b"c" * 512), lambda: blk.write_zeroes(512, 512),
        lambda: blk.pread(4096, 512), lambda: blk.flush(), lambda: blk.pread(0, 512),
    ]
    for step in steps:
        with contextlib.suppress(OSError):
            step()


RULES = [Rule(Delay(0.25), name="slow", op="read", nth=1),
         Rule(Corrupt(3), name="rot", op="read", every=3),
         Rule(Error("ENOSPC"), name="full", op="write", nth=2),
         Rule(Torn(sectors=1, ack=False), name="tear", op="write", nth=1),
         Rule(SetState(), name="to-2", op="flush", nth=1, new_state=2),
         Rule(LyingFlush(), name="liar", op="flush", state=2),
         Rule(Drop(), name="drop", op="discard"),
         Rule(Gone(), name="gone", op="read", nth=5)]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The lines of a real run's event log."""
    f = FaultsFilter(rules=list(RULES), seed=7, clock=VirtualClock())
    f.attach_child("file", MemoryNode(SIZE))
    with BlockBackend(f) as blk:
        workload(blk)
        path = tmp_path_factory.mktemp("faults") / "run.jsonl"
        f.log.save(path)
    lines = path.read_text().splitlines()
    assert len(lines) > 6, lines
    return lines


@st.composite
def hostile_logs(draw: st.DrawFn, lines: list[str]) -> bytes:
    out = [line.encode() for line in lines]
    how = draw(st.sampled_from(["field", "field", "field", "drop-key", "add-key", "header",
                                "bytes", "truncate", "garbage-line"]))
    if how in ("field", "drop-key", "add-key", "header"):
        i = 0 if how == "header" else draw(st.integers(1, len(lines) - 1))
        obj = json.loads(lines[i])
        key = draw(st.sampled_from(["format", "version", "seed", "rules"] if how == "header"
                                   else KEYS))
        if how == "drop-key":
            obj.pop(key, None)
        else:
            obj[key if how != "add-key" else draw(st.sampled_from(["extra", "Seq", key]))] = \
                draw(st.sampled_from(HOSTILE) | st.integers() | st.floats())
        out[i] = json.dumps(obj).encode("utf-8", "surrogatepass")
    elif how == "bytes":
        i = draw(st.integers(0, len(out) - 1))
        line = bytearray(out[i])
        pos = draw(st.integers(0, len(line) - 1))
        line[pos] = draw(st.sampled_from([0xFF, 0xC3, 0x80, 0x00, ord("{"), ord("9")])
                         | st.integers(0, 255))
        out[i] = bytes(line)
    elif how == "truncate":
        blob = b"\n".join(out)
        return blob[:draw(st.integers(0, len(blob)))]
    else:
        out.insert(draw(st.integers(1, len(out))), draw(st.binary(max_size=40)))
    return b"\n".join(out) + b"\n"


def _replay(path: Path, strict: bool) -> None:
    clock = VirtualClock()
    f = FaultsFilter(source=Replayer(path, clock=clock, strict=strict))
    f.attach_child("file", MemoryNode(SIZE))
    with BlockBackend(f) as blk:
        workload(blk)


@given(data=st.data(), strict=st.booleans())
@fuzz
def test_hostile_event_logs_load_and_replay_or_refuse(recorded: list[str], data: st.DataObject,
                                                      strict: bool) -> None:
    blob = data.draw(hostile_logs(recorded))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "run.jsonl"
        path.write_bytes(blob)
        try:
            FaultEventLog.load(path)
        except RigError as e:
            one_line(e)
            assert str(path) in str(e)
            return
        try:
            _replay(path, strict)
        except RigError as e:  # a SCSI event refused, or the workload diverged (strict)
            one_line(e)


def test_the_recorded_log_replays_exactly(recorded: list[str]) -> None:
    """The unmutated log: the replay fires what was recorded (the properties start here)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "run.jsonl"
        path.write_text("\n".join(recorded) + "\n")
        source = Replayer(path, clock=VirtualClock())
        f = FaultsFilter(source=source)
        f.attach_child("file", MemoryNode(SIZE))
        with BlockBackend(f) as blk:
            workload(blk)
        want = [e.outcome() for e in FaultEventLog.load(path)]
        assert [e.outcome() for e in source.log] == want
