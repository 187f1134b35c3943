"""``rig sg inq|readcap|turs|sync|start|stop|eject|raw|sense|wce DEVICE``: SCSI commands over
SG_IO with sg3_utils-style text (``sg_inq``, ``sg_vpd``, ``sg_readcap``, ``sg_turs``,
``sg_sync``, ``sg_start``, ``sg_raw``, ``sg_requests``, ``sdparm --get/--set WCE``) or
``--json``.

Exit status: 0 when the command succeeded; sg3_utils' categories when the device refused it
(2 not ready, 3 medium or hardware error, 5 illegal request, 6 unit attention, 9 invalid
opcode, 33 timeout, ...); 1 for a bad value on the command line (SG_LIB_SYNTAX_ERROR;
argparse's own errors are 2, as for every rig command), 15 when the device cannot be opened,
97 when its answer is malformed (SG_LIB_CAT_MALFORMED). ``raw`` with data out, or with a CDB that
writes the medium, and ``wce --on/--off`` pass the rig's safety check first.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from rig.cli.errors import OneLineParser
from rig.core import values
from rig.drivers import safety
from rig.drivers.sg.caching import CommandRefused
from rig.drivers.sg.node import DeviceCaching, check_writable
from rig.drivers.sg.sgio import SgDevice, SgResult
from rig.errors import ConfigError, RigError
from rig.scsi import cdb
from rig.scsi.fields import ScsiDataError
from rig.scsi.mode_pages import PageControl
from rig.scsi.report import (
    exit_category,
    inquiry_text,
    jsonable,
    outcome_json,
    outcome_text,
    readcap_text,
    vpd_text,
)
from rig.scsi.responses import (
    READ_CAPACITY_10_DATA,
    READ_CAPACITY_16_DATA,
    STANDARD_INQUIRY,
    VPD_HEADER,
    decode_vpd,
    decode_vpd_00,
)
from rig.scsi.status import DRIVER_BYTES, HOST_BYTES, STATUS_NAMES

PROG = "rig sg"
SYNTAX_ERROR, FILE_ERROR, MALFORMED = 1, 15, 97
#: VPD page abbreviations, as sg_vpd spells them.
PAGE_NAMES = {"sv": 0x00, "sn": 0x80, "di": 0x83, "bl": 0xB0, "bdc": 0xB1, "lbpv": 0xB2}
#: Opcodes that change the medium; ``raw`` checks the device is safe to write first.
WRITING_OPCODES = frozenset({0x04, 0x0A, 0x2A, 0x2E, 0x3B, 0x41, 0x42, 0x8A, 0x8E, 0x93,
                             0xAA, 0xAE})


class UsageError(ConfigError):
    """A value on ``rig sg``'s command line that argparse took but the command cannot use
    (sg3_utils' syntax error, exit status 1)."""


def _flag(parse: Callable[[str, Any], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` from a :mod:`rig.core.values` parser: a bad value is argparse's
    one-line error (``argument --timeout: expected seconds ... got 'nan'``)."""

    def convert(text: str) -> Any:
        try:
            return parse("value", text)
        except values.BadValue as e:
            raise argparse.ArgumentTypeError(e.message) from None

    return convert


#: SG_IO's dxfer_len is an unsigned int.
MAX_TRANSFER = (1 << 32) - 1
#: ``turs --number``: enough for any soak, small enough that a typo ends.
MAX_TURS = 1 << 32


def _seconds(key: str, text: Any) -> float:
    return values.seconds(key, text)


def _turs_count(key: str, text: Any) -> int:
    return values.count(key, text, minimum=1, maximum=MAX_TURS)


def _transfer(key: str, text: Any) -> int:
    return values.count(key, text, maximum=MAX_TRANSFER)


def _page(text: str) -> int:
    key = text.strip().lower()
    if key in PAGE_NAMES:
        return PAGE_NAMES[key]
    try:  # as sg3_utils: decimal, or hex with a 0x prefix or an h suffix
        if key.startswith("0x"):
            value = int(key[2:], 16)
        elif key.endswith("h"):
            value = int(key[:-1], 16)
        else:
            value = int(key, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid VPD page {text!r} (a number such as 0x83, 83h or 131, or one of "
            f"{', '.join(PAGE_NAMES)})") from None
    if not 0 <= value <= 0xFF:
        raise argparse.ArgumentTypeError(f"VPD page {text!r} is out of range 0..ff")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sg_command", metavar="SUBCOMMAND",
                                parser_class=OneLineParser)
    sub.required = True

    def common(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("device", metavar="DEVICE", help="/dev/sgN, /dev/sdX or /dev/srN")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--timeout", type=_flag(_seconds), default=60.0, metavar="S",
                       help="command timeout in seconds (default 60; up to 1e6)")
        return p

    p = common("inq", "INQUIRY: standard data and serial number, or a VPD page")
    p.add_argument("--page", "-p", type=_page, default=None, metavar="PG",
                   help="VPD page: hex code or sv, sn, di, bl, bdc, lbpv")
    p = common("readcap", "READ CAPACITY (10), or (16) with --long")
    p.add_argument("--long", "-l", action="store_true", help="READ CAPACITY(16)")
    p = common("turs", "TEST UNIT READY")
    p.add_argument("--number", "-n", type=_flag(_turs_count), default=1, metavar="N",
                   help="send N commands (default 1)")
    p = common("sync", "SYNCHRONIZE CACHE (10)")
    p.add_argument("--immed", action="store_true", help="return before the cache is written")
    for name, what in (("start", "START STOP UNIT: start (spin up)"),
                       ("stop", "START STOP UNIT: stop (spin down)"),
                       ("eject", "START STOP UNIT: stop and eject the medium")):
        p = common(name, what)
        p.add_argument("--immed", action="store_true", help="return at once")
    p = common("raw", "any CDB (hex bytes), like sg_raw")
    p.add_argument("cdb", nargs="+", metavar="CDB", help="CDB bytes in hex: 12 00 00 00 24 00")
    p.add_argument("--request", "-r", type=_flag(_transfer), default=0, metavar="N",
                   help="read N bytes of data in")
    p.add_argument("--send", "-s", metavar="HEX", default=None,
                   help="send these bytes (hex) as data out")
    p.add_argument("--allow", action="append", default=[], metavar="DEV",
                   help="allow writing to DEV (path, serial:X or wwn:X), like RIG_ALLOW_DEVICES")
    p = common("sense", "REQUEST SENSE")
    p.add_argument("--desc", action="store_true", help="ask for descriptor format")
    p = common("wce", "the write cache: WCE in the Caching mode page, like sdparm --get/--set WCE")
    onoff = p.add_mutually_exclusive_group()
    onoff.add_argument("--on", dest="wce_set", action="store_const", const=True, default=None,
                       help="enable it (MODE SELECT, current values)")
    onoff.add_argument("--off", dest="wce_set", action="store_const", const=False,
                       help="disable it: every write is on the medium when it completes")
    p.add_argument("--save", action="store_true",
                   help="with --on/--off: also the saved values (SP=1), as sdparm --save")
    p.add_argument("--allow", action="append", default=[], metavar="DEV",
                   help="allow changing DEV (path, serial:X or wwn:X), like RIG_ALLOW_DEVICES")


def _hexdump(data: bytes) -> str:
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk[:8])
        if len(chunk) > 8:
            hexes += "  " + " ".join(f"{b:02x}" for b in chunk[8:])
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f" {off:02x}     {hexes:<49}  {text}")
    return "\n".join(lines)


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str | None) -> None:
    if args.json:
        print(json.dumps(jsonable(payload), indent=2))
    elif text:
        print(text)


def _failed(args: argparse.Namespace, what: str, r: SgResult,
            extra: dict[str, Any] | None = None) -> int:
    if args.json:
        print(json.dumps(jsonable({**(extra or {}), "command": what,
                                   "outcome": outcome_json(r.outcome)}), indent=2))
    else:
        print(outcome_text(what, r.outcome), file=sys.stderr)
    return exit_category(r.outcome)


def _inq(args: argparse.Namespace, dev: SgDevice) -> int:
    if args.page is not None:
        r = dev.execute(cdb.inquiry(args.page, 0xFFFC if args.page == 0x83 else 0xFC))
        if not r.ok:
            return _failed(args, f"INQUIRY VPD page {args.page:#04x}", r)
        try:
            decoded = decode_vpd(args.page, r.data)
        except ValueError as e:
            raise UsageError(f"INQUIRY VPD page {args.page:#04x}: {e}") from None
        # the page as long as it says it is (QEMU pads to the allocation length, resid 0)
        data = r.data[:4 + VPD_HEADER.decode(r.data).num("page_length")]
        _emit(args, {"device": args.device, "page": args.page, "vpd": decoded,
                     "raw": data}, vpd_text(args.page, decoded))
        return 0
    r = dev.execute(cdb.inquiry())
    if not r.ok:
        return _failed(args, "INQUIRY", r)
    inq = STANDARD_INQUIRY.decode(r.data)
    length = inq.num("additional_length") + 5
    serial = None
    pages = dev.execute(cdb.inquiry(0x00))
    if pages.ok and 0x80 in decode_vpd_00(pages.data):
        sn = dev.execute(cdb.inquiry(0x80))
        if sn.ok:
            serial = decode_vpd(0x80, sn.data)
    text = inquiry_text(inq, length)
    if serial is not None:
        text += f"\n Unit serial number: {serial}"
    _emit(args, {"device": args.device, "inquiry": inq, "length": length,
                 "serial": serial}, text)
    return 0


def _readcap(args: argparse.Namespace, dev: SgDevice) -> int:
    command = cdb.read_capacity_16() if args.long else cdb.read_capacity_10()
    r = dev.execute(command)
    if not r.ok:
        return _failed(args, "READ CAPACITY(16)" if args.long else "READ CAPACITY(10)", r)
    layout = READ_CAPACITY_16_DATA if args.long else READ_CAPACITY_10_DATA
    rec = layout.decode(r.data)
    payload = {"device": args.device, "read_capacity": rec,
               "blocks": rec.num("returned_lba") + 1,
               "size": (rec.num("returned_lba") + 1) * rec.num("block_length")}
    _emit(args, payload, readcap_text(rec, long=args.long))
    return 0


def _turs(args: argparse.Namespace, dev: SgDevice) -> int:
    if args.number < 1:
        raise UsageError("--number must be at least 1")
    last: SgResult | None = None
    errors = 0
    for _ in range(args.number):
        last = dev.execute(cdb.test_unit_ready())
        errors += not last.ok
    assert last is not None
    if not last.ok:
        return _failed(args, "test unit ready", last, {"errors": errors})
    text = (f"Completed {args.number} Test Unit Ready commands with {errors} errors"
            if args.number > 1 else None)
    _emit(args, {"device": args.device, "ready": errors == 0, "commands": args.number,
                 "errors": errors, "outcome": outcome_json(last.outcome)}, text)
    return 0 if errors == 0 else exit_category(last.outcome)


def _simple(args: argparse.Namespace, dev: SgDevice, what: str, command: cdb.Command) -> int:
    r = dev.execute(command)
    if not r.ok:
        return _failed(args, what, r)
    _emit(args, {"device": args.device, "command": what, "outcome": outcome_json(r.outcome)},
          None)
    return 0


def _parse_hex(items: list[str], what: str) -> bytes:
    text = "".join(items).replace(" ", "").replace(",", "")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"{what} is not hex bytes: {' '.join(items)!r}") from None


def _raw_command(args: argparse.Namespace) -> cdb.Command:
    cdb_bytes = _parse_hex(args.cdb, "CDB")
    data_out = _parse_hex([args.send], "--send") if args.send else b""
    if args.request < 0:
        raise UsageError("--request must not be negative")
    try:
        return cdb.raw(cdb_bytes, data_in=args.request, data_out=data_out)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _raw(args: argparse.Namespace, dev: SgDevice, command: cdb.Command) -> int:
    r = dev.execute(command)
    payload = {"device": args.device, "cdb": command.cdb, "outcome": outcome_json(r.outcome),
               "data": r.data}
    if args.json:
        print(json.dumps(jsonable(payload), indent=2))
    else:
        o = r.outcome
        print(f"SCSI Status: {STATUS_NAMES.get(o.status, hex(o.status))}")
        if o.host_status:
            print(f"Host status: {HOST_BYTES.get(o.host_status, hex(o.host_status))}")
        if o.driver_status & 0x0F not in (0, 8):
            print(f"Driver status: {DRIVER_BYTES.get(o.driver_status & 0x0F, '?')}")
        if o.sense is not None:
            print("\nSense Information:")
            print(o.sense.text())
        if command.data_in:
            print(f"\nReceived {len(r.data)} bytes of data:")
            if r.data:
                print(_hexdump(r.data))
    return exit_category(r.outcome)


def _sense(args: argparse.Namespace, dev: SgDevice) -> int:
    r = dev.execute(cdb.request_sense(desc=args.desc))
    if not r.ok:
        return _failed(args, "REQUEST SENSE", r)
    from rig.scsi.sense import decode_sense

    s = decode_sense(r.data)
    text = s.text() if s is not None else "No sense data"
    _emit(args, {"device": args.device, "sense": s, "raw": r.data}, text)
    return 0


def _optional(cache: DeviceCaching, pc: PageControl) -> bool | None:
    """WCE of the ``pc`` values, or None when the device does not report them."""
    try:
        return cache.caching(pc).wce
    except CommandRefused:
        return None


def _wce(args: argparse.Namespace, dev: SgDevice, allow: safety.AllowList | None) -> int:
    cache = DeviceCaching(dev, allow=allow)
    try:
        if args.wce_set is not None:
            try:
                cache.set_write_cache(args.wce_set, save=args.save)
            except CommandRefused:
                raise
            except OSError as e:  # not changeable or not savable: nothing was sent
                raise UsageError(e.strerror or str(e)) from None
        page = cache.caching()
        changeable = cache.caching(PageControl.CHANGEABLE).wce
    except CommandRefused as e:
        return _failed(args, e.result.command.name.upper().replace("_", " "), e.result)
    except ScsiDataError as e:
        print(f"{PROG} wce: {args.device}: {e}", file=sys.stderr)
        return MALFORMED
    default, saved = _optional(cache, PageControl.DEFAULT), _optional(cache, PageControl.SAVED)
    kernel = cache.kernel_write_cache()
    payload = {"device": args.device, "wce": page.wce, "rcd": page.rcd, "changeable": changeable,
               "default": default, "saved": saved, "savable": page.savable, "kernel": kernel,
               "page": page.page}

    def shown(value: bool | None) -> str:
        return " -" if value is None else f"{int(value):2d}"

    text = (f"WCE         {int(page.wce)}  [cha: {'y' if changeable else 'n'}, def:"
            f"{shown(default)}, sav:{shown(saved)}]")
    if kernel is not None:
        text += f"\nkernel: {kernel} (queue/write_cache)"
    _emit(args, payload, text)
    return 0


def run(args: argparse.Namespace) -> int:
    """SCSI commands over SG_IO (inq, readcap, turs, sync, start, stop, eject, raw, sense,
    wce)."""
    name = args.sg_command
    try:
        timeout_ms = int(args.timeout * 1000)
        if timeout_ms < 1:
            raise UsageError("--timeout must be positive")
        command: cdb.Command | None = None
        write = False
        if name == "raw":
            command = _raw_command(args)
            write = bool(command.data_out) or command.opcode in WRITING_OPCODES
        if name == "wce":
            if args.save and args.wce_set is None:
                raise UsageError("--save goes with --on or --off")
            write = args.wce_set is not None
        allow = None
        try:
            if write:
                allow = safety.AllowList.from_entries(args.allow) if args.allow else None
                check_writable(args.device, allow)
            dev = SgDevice(args.device, write=write, timeout_ms=timeout_ms)
        except OSError as e:
            print(f"{PROG} {name}: cannot open {args.device}: {e.strerror or e}",
                  file=sys.stderr)
            return FILE_ERROR
        with dev:
            if name == "inq":
                return _inq(args, dev)
            if name == "readcap":
                return _readcap(args, dev)
            if name == "turs":
                return _turs(args, dev)
            if name == "sync":
                return _simple(args, dev, "SYNCHRONIZE CACHE(10)",
                               cdb.synchronize_cache(immed=args.immed))
            if name in ("start", "stop", "eject"):
                command = cdb.start_stop_unit(start=name == "start", loej=name == "eject",
                                              immed=args.immed)
                return _simple(args, dev, "START STOP UNIT", command)
            if name == "raw":
                assert command is not None
                return _raw(args, dev, command)
            if name == "wce":
                return _wce(args, dev, allow)
            return _sense(args, dev)
    except UsageError as e:
        print(f"{PROG} {name}: {e}", file=sys.stderr)
        return SYNTAX_ERROR
    except RigError as e:
        print(f"{PROG} {name}: {e}", file=sys.stderr)
        return FILE_ERROR
    except OSError as e:
        print(f"{PROG} {name}: {args.device}: {e.strerror or e}", file=sys.stderr)
        return FILE_ERROR

