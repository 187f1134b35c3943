"""Text (in sg3_utils' layout: ``sg_inq``, ``sg_vpd``, ``sg_readcap``, ``sg_decode_sense``) and
JSON for decoded SCSI data, for ``rig sg``. Our wording; the field names are the standard's."""

from __future__ import annotations

from typing import Any

from rig.scsi.fields import Record
from rig.scsi.responses import (
    ASSOCIATIONS,
    CODE_SETS,
    DESIGNATOR_TYPES,
    DEVICE_TYPES,
    VERSIONS,
    VPD_NAMES,
    designator_text,
)
from rig.scsi.sense import Sense
from rig.scsi.status import DRIVER_BYTES, HOST_BYTES, STATUS_NAMES, Outcome


def jsonable(value: Any) -> Any:
    """Records, bytes (as spaced hex) and nested containers, ready for json.dumps."""
    if isinstance(value, Record):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex(" ")
    if isinstance(value, Sense):
        return value.to_json()
    return value


def device_type_name(pdt: int) -> str:
    return DEVICE_TYPES.get(pdt, f"{pdt:#04x}")


def inquiry_text(inq: Record, length: int) -> str:
    v = inq.num
    version = v("version")
    lines = [
        "standard INQUIRY:",
        f"  PQual={v('peripheral_qualifier')}  PDT={v('peripheral_device_type')}  "
        f"RMB={v('rmb')}  LU_CONG={v('lu_cong')}  version={version:#04x}  "
        f"[{VERSIONS.get(version, 'unknown')}]",
        f"  NormACA={v('normaca')}  HiSUP={v('hisup')}  "
        f"Resp_data_format={v('response_data_format')}",
        f"  SCCS={v('sccs')}  ACC={v('acc')}  TPGS={v('tpgs')}  3PC={v('3pc')}  "
        f"Protect={v('protect')}",
        f"  EncServ={v('encserv')}  MultiP={v('multip')}  Addr16={v('addr16')}",
        f"  WBus16={v('wbus16')}  Sync={v('sync')}  CmdQue={v('cmdque')}",
        f"    length={length} ({length:#x})   Peripheral device type: "
        f"{device_type_name(v('peripheral_device_type'))}",
        f" Vendor identification: {inq.text('vendor')}",
        f" Product identification: {inq.text('product')}",
        f" Product revision level: {inq.text('revision')}",
    ]
    return "\n".join(lines)


def vpd_text(page: int, decoded: Any) -> str:
    title = VPD_NAMES.get(page, f"VPD page {page:#04x}")
    lines = [f"{title} VPD page:"]
    if page == 0x00:
        for code in decoded:
            lines.append(f"  [{code:#04x}] {VPD_NAMES.get(code, '')}".rstrip())
    elif page == 0x80:
        lines.append(f"  Unit serial number: {decoded}")
    elif page == 0x83:
        for i, d in enumerate(decoded, 1):
            lines.append(f"  Designation descriptor number {i}, descriptor length: "
                         f"{4 + d['designator_length']}")
            lines.append(f"    designator_type: {DESIGNATOR_TYPES.get(d['designator_type'], '?')}"
                         f",  code_set: {CODE_SETS.get(d['code_set'], d['code_set'])}")
            lines.append(f"    associated with the {ASSOCIATIONS[d['association']]}")
            lines.append(f"      {designator_text(d)}")
    elif isinstance(decoded, Record):
        for key, value in decoded.items():
            if key in ("peripheral_qualifier", "peripheral_device_type", "page_code",
                       "page_length"):
                continue
            shown = value.hex(" ") if isinstance(value, bytes) else value
            lines.append(f"  {key.replace('_', ' ').capitalize()}: {shown}")
    else:
        lines.append("  " + bytes(decoded).hex(" "))
    return "\n".join(lines)


def _size_line(blocks: int, block_length: int) -> str:
    size = blocks * block_length
    return (f"   Device size: {size} bytes, {size / 1048576:.1f} MiB, "
            f"{size / 1e9:.2f} GB")


def readcap_text(rec: Record, *, long: bool) -> str:
    last = rec.num("returned_lba")
    bl = rec.num("block_length")
    lines = ["Read Capacity results:"]
    if long:
        lines.append(f"   Protection: prot_en={rec.num('prot_en')}, p_type={rec.num('p_type')}, "
                     f"p_i_exponent={rec.num('p_i_exponent')}")
        lines.append(f"   Logical block provisioning: lbpme={rec.num('lbpme')}, "
                     f"lbprz={rec.num('lbprz')}")
    lines.append(f"   Last LBA={last} ({last:#x}), Number of logical blocks={last + 1}")
    lines.append(f"   Logical block length={bl} bytes")
    if long:
        lines.append(f"   Logical blocks per physical block exponent={rec.num('lbppbe')}")
        lines.append(f"   Lowest aligned LBA={rec.num('lowest_aligned_lba')}")
    lines.append("Hence:")
    lines.append(_size_line(last + 1, bl))
    return "\n".join(lines)


def outcome_json(o: Outcome) -> dict[str, Any]:
    return {
        "status": o.status, "status_name": STATUS_NAMES.get(o.status, hex(o.status)),
        "host_status": o.host_status, "host_status_name": HOST_BYTES.get(o.host_status, ""),
        "driver_status": o.driver_status,
        "driver_status_name": DRIVER_BYTES.get(o.driver_status & 0x0F, ""),
        "resid": o.resid, "duration_ms": o.duration_ms, "info": o.info,
        "sense": o.sense.to_json() if o.sense is not None else None,
        "ok": o.ok, "errno": o.errno, "blk_status": o.blk_status,
    }


def outcome_text(what: str, o: Outcome) -> str:
    """A failed command as sg3_utils reports one: the command, then the sense."""
    lines = [f"{what}: {o.describe()}"]
    if o.sense is not None:
        lines.extend(o.sense.text().splitlines())
    return "\n".join(lines)


#: sg3_utils' exit statuses (SG_LIB_CAT_*), so scripts can tell failures apart.
def exit_category(o: Outcome) -> int:
    if o.ok:
        return 0
    if o.host_status == 0x03 or o.driver_status & 0x0F == 0x06:
        return 33  # timeout
    if o.host_status:
        return 99
    if o.status == 0x18:
        return 24
    if o.status == 0x08:
        return 26
    if o.status == 0x28:
        return 27
    s = o.sense
    if s is None:
        return 98 if o.status == 0x02 else 99
    key = s.sense_key
    if key == 0x5:
        return 9 if s.asc == 0x20 else 5
    return {0x0: 20, 0x1: 21, 0x2: 2, 0x3: 3, 0x4: 3, 0x6: 6, 0x7: 7, 0xA: 10, 0xB: 11,
            0xE: 14}.get(key, 99)
