"""Bad state names and bad write logs end in one line and exit 2, never a traceback, and a
refused materialize leaves its target as it was (issue 18 part 4; each case was a traceback)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from rig.cli.main import main
from rig.crash.crashstate import BadStateName, CrashState
from rig.crash.logfile import HEADER_SIZE, LogWriter, encode_record, read_log
from rig.crash.records import Kind
from rig.crash.states import CrashStates
from rig.errors import ConfigError

SIZE = 64 * 1024


def _one_line(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["crash", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rig crash: "), err
    return err[0]


@pytest.mark.parametrize("name, message", [
    ("cut 6 keep 1", r"records [1] are not in flight at cut 6"),
    ("cut 6 torn 4[0-99]", "record 4 has sectors 0..1"),
    ("cut 6 torn 4[7-3]", "sector range 7-3 is empty"),
    ("cut 6 torn 4[0-1]", "name it 'keep 4'"),
    ("cut 6 keep 4 torn 4[0]", "both kept whole and torn"),
    ("cut 6 keep 5,4", "must increase"),
    ("cut 6 torn 4[]", "is not a sector index"),
    ("cut " + "9" * 5000, "5000-character value"),
    ("cut ٦", "not a crash state"),
    ("cut 06", "without leading zeros"),
])
def test_a_bad_state_name_is_one_line_and_the_target_unchanged(
        log: Path, tmp_path: Path, name: str, message: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "img"
    img.write_bytes(b"\xee" * SIZE)
    assert message in _one_line(capsys, "materialize", str(log), name, str(img), "--torn")
    assert img.read_bytes() == b"\xee" * SIZE


def test_a_reversed_sector_range_is_no_state() -> None:
    """``4[7-3]`` parsed to a torn record keeping nothing: a state no listing has."""
    with pytest.raises(BadStateName, match="empty"):
        CrashState.parse("cut 5 torn 4[7-3]")
    with pytest.raises(ValueError, match="must increase"):
        CrashState.parse("cut 5 torn 4[3,1]")


def _huge_log(path: Path, size: int) -> Path:
    with LogWriter(path, device_size=size, logical_block_size=512) as w:
        w.write(0, b"\x01" * 4096)
        w.flush()
        w.write(4096, b"\x02" * 4096)
    return path


def test_a_one_tib_log_lists_its_states_and_refuses_an_image(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The header says 1 TiB: listing needs no image; materializing names the size and the
    limit instead of allocating the device in memory."""
    path = _huge_log(tmp_path / "tib.rwlog", 1 << 40)
    assert main(["crash", "states", str(path)]) == 0
    assert "3 records, 2 cut points, 4 crash states" in capsys.readouterr().out
    img = tmp_path / "img"
    img.write_bytes(b"\xee" * 4096)
    with open(img, "r+b") as f:
        f.truncate(1 << 40)  # sparse: the log's size, so the size check passes
    line = _one_line(capsys, "materialize", str(path), "cut 3 keep 3", str(img))
    assert "1T (1099511627776 bytes)" in line and "RAM" in line
    with open(img, "rb") as f:
        assert f.read(4096) == b"\xee" * 4096
    assert img.stat().st_blocks <= 16


def test_a_device_of_2_to_the_63_bytes_is_refused_at_the_header(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _huge_log(tmp_path / "big.rwlog", 1 << 63)
    line = _one_line(capsys, "states", str(path))
    assert "at byte 16: 'device size'" in line and "9223372036854775808" in line


def _with_record(log: Path, blob: bytes) -> Path:
    log.write_bytes(log.read_bytes() + blob)
    return log


@pytest.mark.parametrize("record, message", [
    (encode_record(7, Kind.FLUSH, 0, 0, 0, b"data"), "a flush with a length or payload"),
    (encode_record(7, Kind.WRITE, 0, SIZE, 4, zlib.compress(bytes(4096))),
     f"cannot hold a {SIZE}-byte write"),
    (encode_record(7, Kind.WRITE, 0, 512, 4, zlib.compress(bytes(1 << 20))),
     "not one whole stream of 512 bytes"),
    (encode_record(7, Kind.DISCARD, 0, 512, 1, b""), "flags 0x01 on a discard record"),
    (encode_record(7, Kind.MARK, 5, 0, 0, b"m"), "a mark with an offset or length"),
])
def test_record_fields_that_no_writer_writes_are_refused(log: Path, record: bytes,
                                                         message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read_log(_with_record(log, record + encode_record(8, Kind.FLUSH, 0, 0, 0, b"")))


def test_a_payload_length_past_the_file_reads_nothing_more(log: Path) -> None:
    """A record claiming 4 GiB of payload at the end is a torn tail, read without asking the
    OS for 4 GiB."""
    head = bytearray(encode_record(7, Kind.WRITE, 0, 512, 0, bytes(512)))
    struct.pack_into("<I", head, 4, 0xFFFFFFFF)
    struct.pack_into("<I", head, 36, zlib.crc32(head[:36]))
    got = read_log(_with_record(log, bytes(head[:40]) + bytes(100)))
    assert got.last_seq == 6 and got.tail_note and "4294967295 payload bytes" in got.tail_note


def test_a_bad_block_size_or_reserved_bytes_in_the_header_are_refused(log: Path) -> None:
    blob = bytearray(log.read_bytes())
    for where, value, message in ((12, 1 << 30, "logical block size"), (24, 1, "reserved")):
        bad = bytearray(blob)
        struct.pack_into("<I", bad, where, value)
        struct.pack_into("<I", bad, 28, zlib.crc32(bad[:28]))
        log.write_bytes(bytes(bad))
        with pytest.raises(ConfigError, match=message):
            read_log(log)
    assert HEADER_SIZE == 32


def test_torn_units_beyond_the_cap_are_one_error(tmp_path: Path) -> None:
    path = tmp_path / "wide.rwlog"
    with LogWriter(path, device_size=1 << 40, logical_block_size=512) as w:
        w.discard(0, 1 << 39)
    log = read_log(path)
    assert CrashStates(log).count() == 2
    with pytest.raises(ConfigError, match="sectors in flight, more than"):
        CrashStates(log, torn=True)
