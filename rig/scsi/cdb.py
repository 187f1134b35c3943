"""SCSI commands (CDBs) as field tables, and builders that return a :class:`Command`.

Offsets follow the T10 standards (SPC-4/5 for INQUIRY, REQUEST SENSE, MODE SENSE, MODE SELECT,
REPORT LUNS, TEST UNIT READY; SBC-3/4 for READ/WRITE, READ CAPACITY, SYNCHRONIZE CACHE,
WRITE SAME, UNMAP, START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL; MMC-6 for GET EVENT STATUS
NOTIFICATION and READ TOC). Obsolete bits are left out (zero on encode).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from rig.errors import ConfigError
from rig.scsi.fields import Field, FieldValue, Layout, Record, flag, u

#: The most data one command may ask for (SG_IO's dxfer_len is an unsigned int).
MAX_DATA_IN = (1 << 32) - 1


class Direction(enum.Enum):
    NONE = "none"
    IN = "in"  # device to host
    OUT = "out"  # host to device


@dataclass(frozen=True)
class CdbSpec:
    name: str
    opcode: int
    layout: Layout
    direction: Direction
    service_action: int | None = None

    def build(self, **values: FieldValue) -> bytes:
        return self.layout.encode(values)

    def parse(self, cdb: bytes | bytearray) -> Record:
        return self.layout.decode(cdb)


@dataclass(frozen=True)
class Command:
    """A CDB ready to send: what goes out (``data_out``) or how much may come in (``data_in``)."""

    name: str
    cdb: bytes
    direction: Direction = Direction.NONE
    data_in: int = 0
    data_out: bytes = b""

    @property
    def opcode(self) -> int:
        return self.cdb[0]


def _spec(name: str, opcode: int, size: int, fields: list[Field], direction: Direction,
          service_action: int | None = None) -> CdbSpec:
    const = {"opcode": opcode}
    all_fields = [u("opcode", 0, 8), *fields]
    if service_action is not None:
        const["service_action"] = service_action
    layout = Layout(f"cdb.{name}", size, all_fields, const)
    spec = CdbSpec(name, opcode, layout, direction, service_action)
    SPECS[name] = spec
    return spec


SPECS: dict[str, CdbSpec] = {}
_N, _I, _O = Direction.NONE, Direction.IN, Direction.OUT

TEST_UNIT_READY = _spec("test_unit_ready", 0x00, 6, [u("control", 5, 8)], _N)
REQUEST_SENSE = _spec("request_sense", 0x03, 6, [
    flag("desc", 1, 0), u("allocation_length", 4, 8), u("control", 5, 8)], _I)
INQUIRY = _spec("inquiry", 0x12, 6, [
    flag("evpd", 1, 0), u("page_code", 2, 8), u("allocation_length", 3, 16),
    u("control", 5, 8)], _I)
MODE_SELECT_6 = _spec("mode_select_6", 0x15, 6, [
    flag("pf", 1, 4), flag("sp", 1, 0), u("parameter_list_length", 4, 8),
    u("control", 5, 8)], _O)
MODE_SENSE_6 = _spec("mode_sense_6", 0x1A, 6, [
    flag("dbd", 1, 3), u("pc", 2, 2, 6), u("page_code", 2, 6), u("subpage_code", 3, 8),
    u("allocation_length", 4, 8), u("control", 5, 8)], _I)
START_STOP_UNIT = _spec("start_stop_unit", 0x1B, 6, [
    flag("immed", 1, 0), u("power_condition_modifier", 3, 4), u("power_condition", 4, 4, 4),
    flag("no_flush", 4, 2), flag("loej", 4, 1), flag("start", 4, 0), u("control", 5, 8)], _N)
PREVENT_ALLOW = _spec("prevent_allow_medium_removal", 0x1E, 6, [
    u("prevent", 4, 2), u("control", 5, 8)], _N)
READ_CAPACITY_10 = _spec("read_capacity_10", 0x25, 10, [u("control", 9, 8)], _I)


def _rw10(name: str, opcode: int, direction: Direction) -> CdbSpec:
    return _spec(name, opcode, 10, [
        u("protect", 1, 3, 5), flag("dpo", 1, 4), flag("fua", 1, 3), u("lba", 2, 32),
        u("group", 6, 5), u("transfer_length", 7, 16), u("control", 9, 8)], direction)


def _rw16(name: str, opcode: int, direction: Direction) -> CdbSpec:
    return _spec(name, opcode, 16, [
        u("protect", 1, 3, 5), flag("dpo", 1, 4), flag("fua", 1, 3), u("lba", 2, 64),
        u("transfer_length", 10, 32), u("group", 14, 6), u("control", 15, 8)], direction)


READ_10 = _rw10("read_10", 0x28, _I)
WRITE_10 = _rw10("write_10", 0x2A, _O)
READ_16 = _rw16("read_16", 0x88, _I)
WRITE_16 = _rw16("write_16", 0x8A, _O)
SYNCHRONIZE_CACHE_10 = _spec("synchronize_cache_10", 0x35, 10, [
    flag("immed", 1, 1), u("lba", 2, 32), u("group", 6, 5), u("blocks", 7, 16),
    u("control", 9, 8)], _N)
SYNCHRONIZE_CACHE_16 = _spec("synchronize_cache_16", 0x91, 16, [
    flag("immed", 1, 1), u("lba", 2, 64), u("blocks", 10, 32), u("group", 14, 6),
    u("control", 15, 8)], _N)
WRITE_SAME_16 = _spec("write_same_16", 0x93, 16, [
    u("protect", 1, 3, 5), flag("anchor", 1, 4), flag("unmap", 1, 3), flag("ndob", 1, 0),
    u("lba", 2, 64), u("blocks", 10, 32), u("group", 14, 6), u("control", 15, 8)], _O)
UNMAP = _spec("unmap", 0x42, 10, [
    flag("anchor", 1, 0), u("group", 6, 5), u("parameter_list_length", 7, 16),
    u("control", 9, 8)], _O)
READ_TOC = _spec("read_toc", 0x43, 10, [
    flag("msf", 1, 1), u("format", 2, 4), u("track", 6, 8), u("allocation_length", 7, 16),
    u("control", 9, 8)], _I)
GET_EVENT_STATUS = _spec("get_event_status_notification", 0x4A, 10, [
    flag("polled", 1, 0), u("notification_class_request", 4, 8),
    u("allocation_length", 7, 16), u("control", 9, 8)], _I)
MODE_SELECT_10 = _spec("mode_select_10", 0x55, 10, [
    flag("pf", 1, 4), flag("rtd", 1, 1), flag("sp", 1, 0), u("parameter_list_length", 7, 16),
    u("control", 9, 8)], _O)
MODE_SENSE_10 = _spec("mode_sense_10", 0x5A, 10, [
    flag("llbaa", 1, 4), flag("dbd", 1, 3), u("pc", 2, 2, 6), u("page_code", 2, 6),
    u("subpage_code", 3, 8), u("allocation_length", 7, 16), u("control", 9, 8)], _I)
READ_CAPACITY_16 = _spec("read_capacity_16", 0x9E, 16, [
    u("service_action", 1, 5), u("lba", 2, 64), u("allocation_length", 10, 32),
    flag("pmi", 14, 0), u("control", 15, 8)], _I, service_action=0x10)
REPORT_LUNS = _spec("report_luns", 0xA0, 12, [
    u("select_report", 2, 8), u("allocation_length", 6, 32), u("control", 11, 8)], _I)

#: opcode -> command name, for printing a CDB (READ CAPACITY(16) is SERVICE ACTION IN(16) 0x10).
OPCODE_NAMES: dict[int, str] = {
    0x00: "Test Unit Ready", 0x03: "Request Sense", 0x12: "Inquiry", 0x15: "Mode Select(6)",
    0x1A: "Mode Sense(6)",
    0x1B: "Start Stop Unit", 0x1E: "Prevent Allow Medium Removal", 0x25: "Read Capacity(10)",
    0x28: "Read(10)", 0x2A: "Write(10)", 0x35: "Synchronize Cache(10)", 0x42: "Unmap",
    0x43: "Read TOC/PMA/ATIP", 0x4A: "Get Event Status Notification", 0x55: "Mode Select(10)",
    0x5A: "Mode Sense(10)",
    0x88: "Read(16)", 0x8A: "Write(16)", 0x91: "Synchronize Cache(16)",
    0x93: "Write Same(16)", 0x9E: "Service Action In(16)", 0xA0: "Report Luns",
}

# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def test_unit_ready() -> Command:
    return Command("test_unit_ready", TEST_UNIT_READY.build())


def request_sense(allocation_length: int = 252, *, desc: bool = False) -> Command:
    return Command("request_sense", REQUEST_SENSE.build(
        desc=int(desc), allocation_length=allocation_length), Direction.IN, allocation_length)


def inquiry(page: int | None = None, allocation_length: int | None = None) -> Command:
    """Standard INQUIRY (``page=None``) or a VPD page."""
    alloc = allocation_length or (96 if page is None else 0xFC)
    cdb = INQUIRY.build(evpd=int(page is not None), page_code=page or 0,
                        allocation_length=alloc)
    return Command("inquiry", cdb, Direction.IN, alloc)


def read_capacity_10() -> Command:
    return Command("read_capacity_10", READ_CAPACITY_10.build(), Direction.IN, 8)


def read_capacity_16(allocation_length: int = 32) -> Command:
    return Command("read_capacity_16", READ_CAPACITY_16.build(
        allocation_length=allocation_length), Direction.IN, allocation_length)


def _use16(lba: int, blocks: int, cdb16: bool | None) -> bool:
    if cdb16 is not None:
        return cdb16
    return lba + blocks > 0xFFFFFFFF or blocks > 0xFFFF


def read(lba: int, blocks: int, block_size: int, *, fua: bool = False,
         cdb16: bool | None = None) -> Command:
    """READ(10), or READ(16) when the LBA or length needs it (or ``cdb16=True``)."""
    spec = READ_16 if _use16(lba, blocks, cdb16) else READ_10
    return Command(spec.name, spec.build(lba=lba, transfer_length=blocks, fua=int(fua)),
                   Direction.IN, blocks * block_size)


def write(lba: int, data: bytes, block_size: int, *, fua: bool = False,
          cdb16: bool | None = None) -> Command:
    if len(data) % block_size:
        raise ValueError(f"write of {len(data)} bytes is not a multiple of {block_size}")
    blocks = len(data) // block_size
    spec = WRITE_16 if _use16(lba, blocks, cdb16) else WRITE_10
    return Command(spec.name, spec.build(lba=lba, transfer_length=blocks, fua=int(fua)),
                   Direction.OUT, data_out=bytes(data))


def synchronize_cache(lba: int = 0, blocks: int = 0, *, immed: bool = False,
                      cdb16: bool = False) -> Command:
    """``blocks=0`` means to the end of the medium."""
    spec = SYNCHRONIZE_CACHE_16 if cdb16 or _use16(lba, blocks, None) else SYNCHRONIZE_CACHE_10
    return Command(spec.name, spec.build(lba=lba, blocks=blocks, immed=int(immed)))


def write_same_16(lba: int, blocks: int, block_size: int, *, unmap: bool = True,
                  data: bytes | None = None) -> Command:
    """WRITE SAME(16); with ``unmap`` the device may deallocate (one block of zeroes sent)."""
    block = data if data is not None else bytes(block_size)
    return Command("write_same_16", WRITE_SAME_16.build(lba=lba, blocks=blocks,
                                                        unmap=int(unmap)),
                   Direction.OUT, data_out=block)


def unmap(ranges: Iterable[tuple[int, int]]) -> Command:
    """UNMAP of (lba, blocks) ranges, with its parameter list."""
    from rig.scsi.responses import encode_unmap_parameters

    params = encode_unmap_parameters(list(ranges))
    return Command("unmap", UNMAP.build(parameter_list_length=len(params)), Direction.OUT,
                   data_out=params)


def start_stop_unit(*, start: bool = True, loej: bool = False, immed: bool = False,
                    power_condition: int = 0, no_flush: bool = False) -> Command:
    """start + loej: load; stop + loej: eject; start alone: spin up; stop alone: spin down."""
    return Command("start_stop_unit", START_STOP_UNIT.build(
        start=int(start), loej=int(loej), immed=int(immed), power_condition=power_condition,
        no_flush=int(no_flush)))


def prevent_allow_medium_removal(prevent: bool | int) -> Command:
    return Command("prevent_allow_medium_removal", PREVENT_ALLOW.build(prevent=int(prevent)))


def mode_sense(page: int = 0x3F, subpage: int = 0, *, pc: int = 0, dbd: bool = False,
               ten: bool = True, allocation_length: int | None = None) -> Command:
    if ten:
        alloc = allocation_length or 0xFFFC
        cdb = MODE_SENSE_10.build(page_code=page, subpage_code=subpage, pc=pc, dbd=int(dbd),
                                  allocation_length=alloc)
        return Command("mode_sense_10", cdb, Direction.IN, alloc)
    alloc = allocation_length or 0xFC
    cdb = MODE_SENSE_6.build(page_code=page, subpage_code=subpage, pc=pc, dbd=int(dbd),
                             allocation_length=alloc)
    return Command("mode_sense_6", cdb, Direction.IN, alloc)


def mode_select(parameters: bytes, *, save: bool = False, ten: bool = True) -> Command:
    """MODE SELECT with PF=1 (the pages are in the standard's page format); ``save`` sets SP,
    asking the device to keep the pages over a power cycle (its saved values) as well as using
    them now (its current values)."""
    spec = MODE_SELECT_10 if ten else MODE_SELECT_6
    limit = 0xFFFF if ten else 0xFF
    if len(parameters) > limit:
        raise ConfigError(f"{spec.name}: a parameter list of {len(parameters)} bytes does not "
                          f"fit its {limit}-byte length field")
    cdb = spec.build(pf=1, sp=int(save), parameter_list_length=len(parameters))
    return Command(spec.name, cdb, Direction.OUT, data_out=bytes(parameters))


def get_event_status_notification(classes: int = 1 << 4, allocation_length: int = 8
                                  ) -> Command:
    """Polled GESN; ``classes`` is the class request bitmask (bit 4 = media)."""
    return Command("get_event_status_notification", GET_EVENT_STATUS.build(
        polled=1, notification_class_request=classes, allocation_length=allocation_length),
        Direction.IN, allocation_length)


def read_toc(fmt: int = 0, *, msf: bool = False, track: int = 0,
             allocation_length: int = 804) -> Command:
    return Command("read_toc", READ_TOC.build(format=fmt, msf=int(msf), track=track,
                                              allocation_length=allocation_length),
                   Direction.IN, allocation_length)


def report_luns(select_report: int = 0, allocation_length: int = 8192) -> Command:
    return Command("report_luns", REPORT_LUNS.build(select_report=select_report,
                                                    allocation_length=allocation_length),
                   Direction.IN, allocation_length)


def raw(cdb: bytes, *, data_in: int = 0, data_out: bytes = b"") -> Command:
    """Any CDB, as given."""
    if not 6 <= len(cdb) <= 260:
        raise ConfigError(f"a CDB is 6 to 260 bytes, not {len(cdb)}")
    if data_in and data_out:
        raise ConfigError("a command moves data one way: give data_in or data_out, not both")
    if not 0 <= data_in <= MAX_DATA_IN:
        raise ConfigError(f"data in: {data_in} bytes, expected 0..{MAX_DATA_IN}")
    direction = Direction.IN if data_in else Direction.OUT if data_out else Direction.NONE
    return Command(f"raw {cdb[0]:#04x}", bytes(cdb), direction, data_in, bytes(data_out))
