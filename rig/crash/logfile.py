"""The write log file: a header, then append-only records, each with its own checksums.

Byte layout (little endian; docs/crash.md has the table):

* header, 32 bytes: magic ``RIGWLOG\\n``, u16 version (1), u16 header length (32), u32 logical
  block size, u64 device size, 4 reserved bytes (0), u32 CRC-32 of the 28 bytes before it;
* record, 40 bytes + payload: u8 kind, u8 flags, u16 reserved (0), u32 payload length, u64
  sequence number, u64 offset (a flush: the last sequence number it covers), u64 length, u32
  CRC-32 of the payload, u32 CRC-32 of the 36 header bytes before it; then the payload (a write's
  data, raw or zlib-compressed; a mark's UTF-8 text; nothing for the others).

The file is only ever appended to, so it can be read while it is written. A record cut short at
the end of the file (a crash of the recorder, or a writer still busy) is a *torn tail*: the
reader stops there and says so in :attr:`LogReader.tail_note`. A damaged record anywhere else is
a :class:`~rig.errors.ConfigError` naming the file and the record's byte offset.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, BinaryIO

from rig.core import values
from rig.core.outputs import open_output
from rig.crash.records import DATA_KINDS, Kind, LogHeader, Record
from rig.errors import ConfigError

MAGIC = b"RIGWLOG\n"
VERSION = 1
_HEADER = struct.Struct("<8sHHIQ4x")  # + u32 crc = 32 bytes
HEADER_SIZE = _HEADER.size + 4
_RECORD = struct.Struct("<BBHIQQQI")  # + u32 header crc = 40 bytes
RECORD_HEADER_SIZE = _RECORD.size + 4
_CRC = struct.Struct("<I")

FLAG_FUA = 1
FLAG_MAY_UNMAP = 2
FLAG_ZLIB = 4
FLAG_SYSTEM = 8
#: The flags each kind of record may carry (the writer never sets others).
_FLAGS_OF = {Kind.WRITE: FLAG_FUA | FLAG_ZLIB, Kind.WRITE_ZEROES: FLAG_FUA | FLAG_MAY_UNMAP,
             Kind.DISCARD: 0, Kind.FLUSH: 0, Kind.MARK: FLAG_SYSTEM}
#: The largest logical block size a header may give (larger than any device's).
MAX_BLOCK_SIZE = 1 << 20
#: deflate expands at most 1032:1, so a write larger than this many times its zlib payload is
#: corrupt (checked before inflating).
_ZLIB_RATIO = 1032

#: Writes shorter than this are never compressed (the zlib header would eat the gain).
_MIN_COMPRESS = 128


def _crc(data: bytes | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def encode_header(header: LogHeader) -> bytes:
    head = _HEADER.pack(MAGIC, VERSION, HEADER_SIZE, header.logical_block_size,
                        header.device_size)
    return head + _CRC.pack(_crc(head))


def encode_record(seq: int, kind: Kind, offset: int, length: int, flags: int,
                  payload: bytes) -> bytes:
    head = _RECORD.pack(kind, flags, 0, len(payload), seq, offset, length, _crc(payload))
    return head + _CRC.pack(_crc(head)) + payload


class LogWriter:
    """Appends records to a new log file. Thread-safe: one lock around each append, so the
    record order is the order of the calls.

    Records go through a buffer; :meth:`sync` hands it to the OS (done after every flush and mark
    record, and at close), so a reader sees them. ``compress`` stores a write's data with zlib
    (level 1) when that makes it smaller.
    """

    def __init__(self, path: str | os.PathLike[str], *, device_size: int,
                 logical_block_size: int = 512, compress: bool = False,
                 option: str = "the write log") -> None:
        self.path = Path(path)
        self.header = LogHeader(device_size, logical_block_size)
        self.compress = compress
        self._lock = threading.Lock()
        self._seq = 0
        # Never a device, never a directory; an existing log file is replaced.
        self._file: IO[bytes] = open_output(self.path, option, replace=True, binary=True,
                                           buffering=1 << 20)
        self._append(encode_header(self.header))
        self._file.flush()

    @property
    def last_seq(self) -> int:
        """The sequence number of the last record appended (0: none yet)."""
        return self._seq

    def _append(self, blob: bytes) -> None:
        self._file.write(blob)

    def _record(self, kind: Kind, offset: int, length: int, flags: int, payload: bytes,
                sync: bool = False) -> int:
        with self._lock:
            if self._file.closed:
                raise ValueError(f"write log {str(self.path)!r} is closed")
            self._seq += 1
            self._append(encode_record(self._seq, kind, offset, length, flags, payload))
            if sync:
                self._file.flush()
            return self._seq

    def write(self, offset: int, data: bytes, *, fua: bool = False) -> int:
        flags = FLAG_FUA if fua else 0
        payload = data
        if self.compress and len(data) >= _MIN_COMPRESS:
            packed = zlib.compress(data, 1)
            if len(packed) < len(data):
                payload, flags = packed, flags | FLAG_ZLIB
        return self._record(Kind.WRITE, offset, len(data), flags, payload)

    def write_zeroes(self, offset: int, length: int, *, fua: bool = False,
                     may_unmap: bool = False) -> int:
        flags = (FLAG_FUA if fua else 0) | (FLAG_MAY_UNMAP if may_unmap else 0)
        return self._record(Kind.WRITE_ZEROES, offset, length, flags, b"")

    def discard(self, offset: int, length: int) -> int:
        return self._record(Kind.DISCARD, offset, length, 0, b"")

    def flush(self, covers: int | None = None) -> int:
        """A completed flush that made every record up to ``covers`` durable (default: all)."""
        covered = self._seq if covers is None else covers
        return self._record(Kind.FLUSH, covered, 0, 0, b"", sync=True)

    def mark(self, text: str, *, system: bool = False) -> int:
        return self._record(Kind.MARK, 0, 0, FLAG_SYSTEM if system else 0,
                            text.encode("utf-8"), sync=True)

    def sync(self) -> None:
        """Hand the buffered records to the OS (a reader of the file sees them)."""
        with self._lock:
            if not self._file.closed:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class LogReader:
    """Reads and validates a log file record by record (it may still be being written).

    Iterating yields :class:`Record` objects; a torn tail ends the iteration and sets
    :attr:`tail_note`. Anything else wrong raises :class:`ConfigError` naming the file and the
    byte offset.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.tail_note: str | None = None
        try:
            with open(self.path, "rb") as f:
                raw = f.read(HEADER_SIZE)
        except OSError as e:
            raise ConfigError(f"cannot read the write log {str(self.path)!r}: "
                              f"{e.strerror}") from None
        self.header = self._parse_header(raw)

    def _error(self, pos: int, what: str) -> ConfigError:
        return ConfigError(f"{self.path}: corrupt write log at byte {pos}: {what}")

    def _parse_header(self, raw: bytes) -> LogHeader:
        if len(raw) < HEADER_SIZE or raw[:8] != MAGIC:
            raise ConfigError(f"{self.path}: not a rig write log (bad magic at byte 0)")
        _, version, header_len, lbs, size = _HEADER.unpack_from(raw)
        if _CRC.unpack_from(raw, _HEADER.size)[0] != _crc(raw[:_HEADER.size]):
            raise self._error(0, "header checksum mismatch")
        if version != VERSION or header_len != HEADER_SIZE:
            raise self._error(8, f"unsupported version {version} (header length {header_len})")
        if lbs < 1 or lbs & (lbs - 1) or lbs > MAX_BLOCK_SIZE:
            raise self._error(12, f"logical block size {lbs} is not a power of two up to "
                              f"{MAX_BLOCK_SIZE}")
        try:
            values.size("device size", size)
        except values.BadValue as e:
            raise self._error(16, str(e)) from None
        if raw[24:28] != bytes(4):
            raise self._error(24, "reserved header bytes are not zero")
        return LogHeader(size, lbs, version)

    def __iter__(self) -> Iterator[Record]:
        self.tail_note = None
        try:
            f = open(self.path, "rb")  # noqa: SIM115 (closed by the with below)
        except OSError as e:
            raise ConfigError(f"cannot read the write log {str(self.path)!r}: "
                              f"{e.strerror}") from None
        with f:
            f.seek(HEADER_SIZE)
            pos, seq = HEADER_SIZE, 0
            while True:
                head = f.read(RECORD_HEADER_SIZE)
                if not head:
                    return
                if len(head) < RECORD_HEADER_SIZE:
                    self._torn(pos, f"{len(head)} bytes of a record header")
                    return
                if _CRC.unpack_from(head, _RECORD.size)[0] != _crc(head[:_RECORD.size]):
                    if not head.strip(b"\0") and _rest_is_zero(f):
                        self._torn(pos, "zero-filled tail")
                        return
                    raise self._error(pos, "record header checksum mismatch")
                kind, flags, reserved, plen, rseq, offset, length, pcrc = _RECORD.unpack_from(
                    head)
                if reserved:
                    raise self._error(pos, "reserved record bytes are not zero")
                # Never ask for more than the file holds (a read allocates what it is asked).
                have = max(0, os.fstat(f.fileno()).st_size - pos - RECORD_HEADER_SIZE)
                payload = f.read(min(plen, have))
                if len(payload) < plen:
                    self._torn(pos, f"record #{rseq} has {len(payload)} of {plen} payload bytes")
                    return
                if _crc(payload) != pcrc:
                    if not f.read(1):
                        self._torn(pos, f"record #{rseq}: payload checksum mismatch at the end")
                        return
                    raise self._error(pos, f"record #{rseq}: payload checksum mismatch")
                seq += 1
                yield self._decode(pos, seq, rseq, kind, flags, offset, length, payload)
                pos += RECORD_HEADER_SIZE + plen

    def _torn(self, pos: int, what: str) -> None:
        self.tail_note = (f"{self.path}: torn tail at byte {pos} ignored ({what}); "
                          "the records before it are intact")

    def _decode(self, pos: int, want_seq: int, seq: int, kind_code: int, flags: int, offset: int,
                length: int, payload: bytes) -> Record:
        if seq != want_seq:
            raise self._error(pos, f"sequence number {seq}, expected {want_seq}")
        try:
            kind = Kind(kind_code)
        except ValueError:
            raise self._error(pos, f"unknown record kind {kind_code}") from None
        if flags & ~_FLAGS_OF[kind]:
            raise self._error(pos, f"record #{seq}: flags 0x{flags:02x} on a "
                              f"{kind.name.lower()} record")
        fua, unmap = bool(flags & FLAG_FUA), bool(flags & FLAG_MAY_UNMAP)
        if kind is Kind.MARK:
            if offset or length:
                raise self._error(pos, f"record #{seq}: a mark with an offset or length")
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                raise self._error(pos, f"record #{seq}: mark is not UTF-8") from None
            return Record(seq, kind, text=text, system=bool(flags & FLAG_SYSTEM))
        if kind is Kind.FLUSH:
            if offset >= seq:
                raise self._error(pos, f"flush #{seq} covers a later record #{offset}")
            if length or payload:
                raise self._error(pos, f"record #{seq}: a flush with a length or payload")
            return Record(seq, kind, covers=offset)
        assert kind in DATA_KINDS
        if offset + length > self.header.device_size:
            raise self._error(pos, f"record #{seq}: [{offset}, +{length}) is past the end of "
                              f"the {self.header.device_size}-byte device")
        if kind is not Kind.WRITE:
            if payload:
                raise self._error(pos, f"record #{seq}: {kind.name.lower()} with a payload")
            return Record(seq, kind, offset, length, fua=fua, may_unmap=unmap)
        if flags & FLAG_ZLIB:
            payload = self._inflate(pos, seq, payload, length)
        if len(payload) != length:
            raise self._error(pos, f"record #{seq}: {len(payload)} data bytes for a "
                              f"{length}-byte write")
        return Record(seq, kind, offset, length, fua=fua, data=payload)

    def _inflate(self, pos: int, seq: int, payload: bytes, length: int) -> bytes:
        """A write's zlib data, never more than its ``length`` (no bomb inflates here)."""
        if length > _ZLIB_RATIO * len(payload) + 64:
            raise self._error(pos, f"record #{seq}: {len(payload)} zlib bytes cannot hold a "
                              f"{length}-byte write")
        inflate = zlib.decompressobj()
        try:
            data = inflate.decompress(payload, length + 1)
        except zlib.error as e:
            raise self._error(pos, f"record #{seq}: bad zlib data ({e})") from None
        if not inflate.eof or inflate.unconsumed_tail or inflate.unused_data:
            raise self._error(pos, f"record #{seq}: bad zlib data (not one whole stream of "
                              f"{length} bytes)")
        return data


def _rest_is_zero(f: BinaryIO) -> bool:
    while chunk := f.read(1 << 16):
        if chunk.strip(b"\0"):
            return False
    return True


@dataclass
class WriteLog:
    """A whole log in memory: its header, its records, and the note about a torn tail."""

    header: LogHeader
    records: list[Record]
    tail_note: str | None = None
    path: Path | None = None
    _by_mark: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for rec in self.records:
            if rec.kind is Kind.MARK and not rec.system:
                self._by_mark.setdefault(rec.text, rec.seq)

    @property
    def last_seq(self) -> int:
        return self.records[-1].seq if self.records else 0

    def mark_seq(self, text: str) -> int:
        """The sequence number of the first user mark ``text`` (KeyError if there is none)."""
        return self._by_mark[text]

    def upto(self, seq: int) -> list[Record]:
        """The records ``1..seq``."""
        return self.records[:max(0, seq)]


def read_log(path: str | os.PathLike[str]) -> WriteLog:
    """Read and validate a whole log file."""
    reader = LogReader(path)
    records = list(reader)
    return WriteLog(reader.header, records, reader.tail_note, reader.path)
