"""The write log format: every record type round-trips, a torn tail is ignored with a note, and
a damaged record is a ConfigError naming the file and its byte offset."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rig.crash.logfile import (
    HEADER_SIZE,
    MAGIC,
    RECORD_HEADER_SIZE,
    LogReader,
    LogWriter,
    encode_record,
    read_log,
)
from rig.crash.records import Kind, LogHeader, Record
from rig.errors import ConfigError

SIZE = 1 << 20


def write_sample(path: Path, compress: bool = False) -> list[Record]:
    data = bytes(range(256)) * 16
    with LogWriter(path, device_size=SIZE, logical_block_size=512, compress=compress) as w:
        w.write(4096, data)
        w.write(0, b"x" * 512, fua=True)
        w.write_zeroes(8192, 1024, fua=True, may_unmap=True)
        w.write_zeroes(9216, 512)
        w.discard(65536, 4096)
        w.flush()
        w.mark("after the first flush")
        w.mark("rig: failed write", system=True)
        w.write(SIZE - 4096, bytes(4096))  # compressible
        w.flush(covers=3)
    return [
        Record(1, Kind.WRITE, 4096, 4096, data=data),
        Record(2, Kind.WRITE, 0, 512, fua=True, data=b"x" * 512),
        Record(3, Kind.WRITE_ZEROES, 8192, 1024, fua=True, may_unmap=True),
        Record(4, Kind.WRITE_ZEROES, 9216, 512),
        Record(5, Kind.DISCARD, 65536, 4096),
        Record(6, Kind.FLUSH, covers=5),
        Record(7, Kind.MARK, text="after the first flush"),
        Record(8, Kind.MARK, text="rig: failed write", system=True),
        Record(9, Kind.WRITE, SIZE - 4096, 4096, data=bytes(4096)),
        Record(10, Kind.FLUSH, covers=3),
    ]


@pytest.mark.parametrize("compress", [False, True])
def test_every_record_type_round_trips(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / "a.wlog"
    want = write_sample(path, compress)
    log = read_log(path)
    assert log.header == LogHeader(SIZE, 512)
    assert log.records == want
    assert log.tail_note is None
    assert log.mark_seq("after the first flush") == 7
    with pytest.raises(KeyError):
        log.mark_seq("rig: failed write")  # system marks are not user marks
    assert path.read_bytes()[:8] == MAGIC


def test_compression_shrinks_zero_data_and_leaves_random_data_raw(tmp_path: Path) -> None:
    raw, packed = tmp_path / "raw.wlog", tmp_path / "z.wlog"
    write_sample(raw, False)
    write_sample(packed, True)
    # record 9 is 4 KiB of zeroes; record 1 (256 distinct bytes x 16) compresses too
    assert packed.stat().st_size < raw.stat().st_size - 4000
    assert raw.stat().st_size == HEADER_SIZE + 10 * RECORD_HEADER_SIZE + 4096 + 512 + 4096 \
        + len("after the first flush") + len("rig: failed write")
    noise = random.Random(3).randbytes(4096)
    sizes = []
    for compress in (False, True):
        with LogWriter(tmp_path / "n.wlog", device_size=SIZE, compress=compress) as w:
            w.write(0, noise)
        sizes.append((tmp_path / "n.wlog").stat().st_size)
        assert read_log(tmp_path / "n.wlog").records[0].data == noise
    assert sizes[0] == sizes[1] == HEADER_SIZE + RECORD_HEADER_SIZE + 4096


@settings(max_examples=30, deadline=None)
@given(data=st.binary(min_size=1, max_size=3000), offset=st.integers(0, SIZE - 3000),
       fua=st.booleans(), compress=st.booleans(), text=st.text(max_size=40))
def test_writes_and_marks_round_trip(tmp_path_factory: pytest.TempPathFactory, data: bytes,
                                     offset: int, fua: bool, compress: bool, text: str) -> None:
    path = tmp_path_factory.mktemp("log") / "p.wlog"
    with LogWriter(path, device_size=SIZE, compress=compress) as w:
        assert w.write(offset, data, fua=fua) == 1
        assert w.mark(text) == 2
    assert read_log(path).records == [Record(1, Kind.WRITE, offset, len(data), fua=fua,
                                             data=data), Record(2, Kind.MARK, text=text)]


def test_a_log_is_readable_while_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "live.wlog"
    w = LogWriter(path, device_size=SIZE)
    assert list(LogReader(path)) == []
    w.write(0, b"a" * 512)
    w.flush()  # flush and mark records hand the buffer to the OS
    assert [r.seq for r in LogReader(path)] == [1, 2]
    w.write(512, b"b" * 512)
    w.sync()
    assert [r.seq for r in LogReader(path)] == [1, 2, 3]
    w.close()


def _truncated(tmp_path: Path, cut: int) -> Path:
    path = tmp_path / "t.wlog"
    write_sample(path)
    blob = path.read_bytes()
    path.write_bytes(blob[:len(blob) - cut])
    return path


@pytest.mark.parametrize("cut", [1, RECORD_HEADER_SIZE - 1, RECORD_HEADER_SIZE + 1])
def test_a_torn_tail_is_ignored_with_a_note(tmp_path: Path, cut: int) -> None:
    # The last record is a 40-byte flush: cutting into it, or into the 4 KiB write before it.
    log = read_log(_truncated(tmp_path, cut))
    assert [r.seq for r in log.records] == list(range(1, 10 if cut < RECORD_HEADER_SIZE else 9))
    assert log.tail_note is not None
    assert "torn tail at byte" in log.tail_note and str(log.path) in log.tail_note


def test_a_zero_filled_tail_and_a_bad_last_payload_are_torn(tmp_path: Path) -> None:
    path = tmp_path / "z.wlog"
    write_sample(path)
    blob = path.read_bytes()
    path.write_bytes(blob + bytes(RECORD_HEADER_SIZE + 100))  # extended but never written
    log = read_log(path)
    assert len(log.records) == 10 and "zero-filled tail" in (log.tail_note or "")
    with LogWriter(path, device_size=SIZE) as w:
        w.write(0, b"a" * 512)
    damaged = bytearray(path.read_bytes())
    damaged[-1] ^= 0xFF  # the last record's data is damaged: as if its last page never landed
    path.write_bytes(bytes(damaged))
    log = read_log(path)
    assert log.records == [] and "payload checksum mismatch at the end" in (log.tail_note or "")


def _record_pos(seq: int, path: Path) -> int:
    pos, blob = HEADER_SIZE, path.read_bytes()
    for _ in range(seq - 1):
        pos += RECORD_HEADER_SIZE + struct.unpack_from("<I", blob, pos + 4)[0]
    return pos


@pytest.mark.parametrize(("where", "message"), [
    (0, "record header checksum mismatch"),          # the kind byte
    (RECORD_HEADER_SIZE + 10, "payload checksum mismatch"),
])
def test_a_corrupt_record_is_named_by_file_and_offset(tmp_path: Path, where: int,
                                                      message: str) -> None:
    path = tmp_path / "c.wlog"
    write_sample(path)
    pos = _record_pos(2, path)
    blob = bytearray(path.read_bytes())
    blob[pos + where] ^= 0x40
    path.write_bytes(bytes(blob))
    with pytest.raises(ConfigError, match=f"{path}: corrupt write log at byte {pos}: .*{message}"):
        read_log(path)


def test_records_that_do_not_fit_the_header_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.wlog"
    with LogWriter(path, device_size=4096) as w:
        w.write(0, b"a")
    blob = path.read_bytes()
    bad = {
        "sequence number 5, expected 2": encode_record(5, Kind.DISCARD, 0, 512, 0, b""),
        "past the end of the 4096-byte device": encode_record(2, Kind.WRITE_ZEROES, 4000, 512,
                                                              0, b""),
        "covers a later record": encode_record(2, Kind.FLUSH, 7, 0, 0, b""),
        "2 data bytes for a 3-byte write": encode_record(2, Kind.WRITE, 0, 3, 0, b"ab"),
    }
    for message, rec in bad.items():
        path.write_bytes(blob + rec + encode_record(3, Kind.MARK, 0, 0, 0, b"m"))
        with pytest.raises(ConfigError, match=f"at byte {len(blob)}: .*{message}"):
            read_log(path)


def test_a_file_that_is_not_a_log_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "n.wlog"
    path.write_bytes(b"hello world" * 10)
    with pytest.raises(ConfigError, match="not a rig write log"):
        read_log(path)
    with pytest.raises(ConfigError, match="cannot read the write log"):
        read_log(tmp_path / "missing.wlog")
    write_sample(path)
    blob = bytearray(path.read_bytes())
    blob[20] ^= 1  # the device size
    path.write_bytes(bytes(blob))
    with pytest.raises(ConfigError, match="at byte 0: header checksum mismatch"):
        read_log(path)
