"""Garbage at the crash-state parser and at write logs (issue 18 part 4).

A real small log is recorded through the rig's ``recorder`` node (writes, FUA, write-zeroes,
discards, flushes, marks; raw and compressed), then Hypothesis mutates it: bytes overwritten,
the file cut short, or one header or record field set to a hostile value with the checksums
made right again (so the value reaches the field checks, not only the CRC). State names are
garbage text, or near-valid names with hostile numbers and ranges.

The contract: reading, listing, checking a name and ``rig crash materialize`` succeed or raise
the rig's own error with a one-line message (the CLI: exit 2, one line on stderr); never another
exception, never a hang; a refused ``materialize`` leaves its target's bytes as they were.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rig
from rig.cli.main import build_parser, run_parsed
from rig.crash.crashstate import CrashState
from rig.crash.logfile import HEADER_SIZE, RECORD_HEADER_SIZE, read_log
from rig.crash.lookup import parse_state
from rig.crash.states import CrashStates
from rig.errors import RigError
from tests.fuzzing import fuzz, one_line

pytestmark = pytest.mark.fuzz

SIZE = 64 * 1024
#: Numbers that sit on a bound or broke a parser once.
HOSTILE_INTS = [0, 1, 2, 3, 7, 8, 511, 512, 513, 4095, 4096, SIZE - 1, SIZE, SIZE + 1,
                2**31, 2**32 - 1, 2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1]


def _record_log(path: Path, compress: bool) -> bytes:
    graph = {"driver": "recorder", "log": str(path), "compress": compress,
             "file": {"driver": "memory", "size": SIZE, "logical-block-size": 512}}
    with rig.open(graph) as blk:
        blk.pwrite(0, bytes(range(256)) * 16)
        blk.flush()
        blk.pwrite(4096, b"\x02" * 4096, fua=True)
        blk.pwrite(8192, b"\x03" * 1024)
        blk.root.mark("after three writes")  # type: ignore[attr-defined]
        blk.pwrite(0, b"\x04" * 512)
        blk.write_zeroes(16384, 2048)
        blk.discard(32768, 4096)
        blk.pwrite(12288, bytes(1536))
    return path.read_bytes()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """The same run recorded raw and compressed."""
    where = tmp_path_factory.mktemp("recorded")
    return [_record_log(where / "raw.rwlog", False), _record_log(where / "zlib.rwlog", True)]


def _records(blob: bytes) -> list[int]:
    """Byte offsets of the records of an intact log."""
    out, pos = [], HEADER_SIZE
    while pos + RECORD_HEADER_SIZE <= len(blob):
        out.append(pos)
        pos += RECORD_HEADER_SIZE + struct.unpack_from("<I", blob, pos + 4)[0]
    return out


#: Header fields (offset, struct format) and record fields (offset in the record, format).
HEADER_FIELDS = [(8, "<H"), (10, "<H"), (12, "<I"), (16, "<Q"), (24, "<I")]
RECORD_FIELDS = [(0, "<B"), (1, "<B"), (2, "<H"), (4, "<I"), (8, "<Q"), (16, "<Q"), (24, "<Q")]


def _fits(fmt: str, value: int) -> int:
    return value % (1 << (8 * struct.calcsize(fmt)))


def _refresh(blob: bytearray, record: int | None) -> None:
    """Recompute the checksum(s) a field change broke."""
    if record is None:
        struct.pack_into("<I", blob, 28, zlib.crc32(blob[:28]))
        return
    plen = struct.unpack_from("<I", blob, record + 4)[0]
    payload = blob[record + RECORD_HEADER_SIZE:record + RECORD_HEADER_SIZE + plen]
    struct.pack_into("<I", blob, record + 32, zlib.crc32(payload))
    struct.pack_into("<I", blob, record + 36, zlib.crc32(blob[record:record + 36]))


@st.composite
def mutated_logs(draw: st.DrawFn, logs: list[bytes]) -> bytes:
    blob = bytearray(draw(st.sampled_from(logs)))
    how = draw(st.sampled_from(["field", "field", "bytes", "truncate", "payload"]))
    if how == "truncate":
        return bytes(blob[:draw(st.integers(0, len(blob)))])
    if how == "bytes":
        for _ in range(draw(st.integers(1, 4))):
            pos = draw(st.integers(0, len(blob) - 1))
            blob[pos] = draw(st.integers(0, 255))
        return bytes(blob)
    records = _records(bytes(blob))
    if how == "payload":  # the data of a record changed, checksums made right
        rec = draw(st.sampled_from(records))
        plen = struct.unpack_from("<I", blob, rec + 4)[0]
        new = draw(st.binary(max_size=64) | st.just(zlib.compress(bytes(1 << 16))))
        blob[rec + RECORD_HEADER_SIZE:rec + RECORD_HEADER_SIZE + plen] = new
        struct.pack_into("<I", blob, rec + 4, len(new))
        _refresh(blob, rec)
        return bytes(blob)
    value = draw(st.sampled_from(HOSTILE_INTS) | st.integers(0, 2**64 - 1))
    if draw(st.booleans()):
        where, fmt = draw(st.sampled_from(HEADER_FIELDS))
        struct.pack_into(fmt, blob, where, _fits(fmt, value))
        _refresh(blob, None)
    else:
        rec = draw(st.sampled_from(records))
        where, fmt = draw(st.sampled_from(RECORD_FIELDS))
        struct.pack_into(fmt, blob, rec + where, _fits(fmt, value))
        _refresh(blob, rec)
    return bytes(blob)


#: State names: garbage, or the grammar with hostile numbers and ranges.
numbers = st.sampled_from(["0", "1", "3", "4", "5", "6", "9", "99", "4294967296", "1" * 70,
                           "1" * 5000, "٣", "-1", "+2", "0x3", ""]) | st.integers(0, 12).map(str)
ranges = st.lists(st.tuples(numbers, st.none() | numbers).map(
    lambda t: t[0] if t[1] is None else f"{t[0]}-{t[1]}"), max_size=4).map(",".join)
names = st.text(max_size=40) | st.builds(
    lambda cut, keep, torn: f"cut {cut}" + (f" keep {','.join(keep)}" if keep else "")
    + (" torn " + ",".join(f"{s}[{r}]" for s, r in torn) if torn else ""),
    numbers, st.lists(numbers, max_size=4), st.lists(st.tuples(numbers, ranges), max_size=3))


@contextlib.contextmanager
def _files(blob: bytes) -> Iterator[tuple[Path, Path]]:
    with tempfile.TemporaryDirectory() as d:
        log, img = Path(d) / "run.rwlog", Path(d) / "disk.img"
        log.write_bytes(blob)
        img.write_bytes(b"\xee" * SIZE)
        yield log, img


PARSER = build_parser()  # once: building it costs more than a crash command on a small log


def _cli(argv: list[str]) -> tuple[int, str]:
    """``rig crash ARGV`` as main() runs it: status and stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            args = PARSER.parse_args(["crash", *argv])
        except SystemExit as e:  # argparse's one-line error (a name such as '-:')
            return int(e.code or 0), err.getvalue()
        status = run_parsed(args)
    return status, err.getvalue()


def _one_line_exit_2(status: int, err: str) -> None:
    lines = [line for line in err.splitlines() if "torn tail" not in line]
    assert status in (0, 2), (status, err)
    if status == 2:
        assert len(lines) == 1 and lines[0].startswith("rig crash"), err


@given(text=names)
@fuzz
def test_state_names_parse_or_are_one_line_errors(text: str) -> None:
    try:
        state = CrashState.parse(text)
    except RigError as e:
        one_line(e)
        return
    assert str(state) == text.strip()  # only what str() writes is accepted


@given(blob=st.data())
@fuzz
def test_mutated_write_logs_read_list_and_materialize_or_refuse(recorded: list[bytes],
                                                                blob: st.DataObject) -> None:
    data = blob.draw(mutated_logs(recorded))
    torn = blob.draw(st.booleans())
    with _files(data) as (log_path, img):
        try:
            log = read_log(log_path)
            states = CrashStates(log, torn=torn)
            listed = list(itertools.islice(states, 20))
            for state in listed[:3]:
                states.pieces(state)
        except RigError as e:
            one_line(e)
            listed = []
        _one_line_exit_2(*_cli(["states", str(log_path), "--limit", "5"]
                               + (["--torn"] if torn else [])))
        name = str(blob.draw(st.sampled_from(listed)) if listed else "cut 1")
        status, err = _cli(["materialize", str(log_path), name, str(img)])
        _one_line_exit_2(status, err)
        if status != 0:
            assert img.read_bytes() == b"\xee" * SIZE  # refused: the target is unchanged


@given(text=names, torn=st.booleans())
@fuzz
def test_names_against_a_real_log_and_materialize(recorded: list[bytes], text: str,
                                                   torn: bool) -> None:
    with _files(recorded[0]) as (log_path, img):
        states = CrashStates(read_log(log_path), torn=torn)
        try:
            state = parse_state(states, text, "STATE")
        except RigError as e:
            one_line(e)
            state = None
        if state is not None:
            states.pieces(state)
        status, err = _cli(["materialize", str(log_path), text, str(img)]
                           + (["--torn"] if torn else []))
        _one_line_exit_2(status, err)
        assert (status == 0) == (state is not None), err
        if status == 0:
            assert img.read_bytes() == states.image(state)  # type: ignore[arg-type]
        else:
            assert img.read_bytes() == b"\xee" * SIZE
