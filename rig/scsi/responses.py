"""Data-in and data-out layouts: INQUIRY and its VPD pages, READ CAPACITY, MODE SENSE, GET
EVENT STATUS NOTIFICATION, READ TOC, REPORT LUNS and the UNMAP parameter list.

Fixed parts are :class:`~rig.scsi.fields.Layout` tables; lists (VPD 00 and 83, LUNs, TOC
tracks, UNMAP descriptors, mode pages) are a header layout plus repeated item layouts, with an
``encode_*`` for each ``decode_*`` so both directions are tested against each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rig.scsi.fields import Layout, Record, ScsiDataError, ascii_field, flag, u

# --------------------------------------------------------------------------------------------
# INQUIRY
# --------------------------------------------------------------------------------------------

STANDARD_INQUIRY = Layout("inquiry.standard", 36, [
    u("peripheral_qualifier", 0, 3, 5), u("peripheral_device_type", 0, 5),
    flag("rmb", 1, 7), flag("lu_cong", 1, 6), u("version", 2, 8),
    flag("normaca", 3, 5), flag("hisup", 3, 4), u("response_data_format", 3, 4),
    u("additional_length", 4, 8),
    flag("sccs", 5, 7), flag("acc", 5, 6), u("tpgs", 5, 2, 4), flag("3pc", 5, 3),
    flag("protect", 5, 0),
    flag("encserv", 6, 6), flag("multip", 6, 4), flag("addr16", 6, 0),
    flag("wbus16", 7, 5), flag("sync", 7, 4), flag("cmdque", 7, 1),
    ascii_field("vendor", 8, 8), ascii_field("product", 16, 16), ascii_field("revision", 32, 4),
])

#: Peripheral device types (SPC-5 table), as sg3_utils names them.
DEVICE_TYPES: dict[int, str] = {
    0x00: "disk", 0x01: "tape", 0x02: "printer", 0x03: "processor", 0x04: "write once optical",
    0x05: "cd/dvd", 0x06: "scanner", 0x07: "optical memory device", 0x08: "medium changer",
    0x09: "communications", 0x0C: "storage array controller", 0x0D: "enclosure services device",
    0x0E: "simplified direct access device", 0x0F: "optical card reader/writer",
    0x11: "object based storage", 0x12: "automation/driver interface",
    0x13: "security manager device", 0x14: "host managed zoned block device",
    0x1E: "well known logical unit", 0x1F: "unknown or no device type",
}

#: INQUIRY version byte -> standard.
VERSIONS: dict[int, str] = {
    0: "no conformance claimed", 1: "SCSI-1", 2: "SCSI-2", 3: "SPC", 4: "SPC-2", 5: "SPC-3",
    6: "SPC-4", 7: "SPC-5",
}


def decode_standard_inquiry(data: bytes) -> Record:
    return STANDARD_INQUIRY.decode(data)


VPD_HEADER = Layout("vpd.header", 4, [
    u("peripheral_qualifier", 0, 3, 5), u("peripheral_device_type", 0, 5),
    u("page_code", 1, 8), u("page_length", 2, 16),
])

VPD_NAMES: dict[int, str] = {
    0x00: "Supported VPD pages", 0x80: "Unit serial number", 0x83: "Device Identification",
    0xB0: "Block limits", 0xB1: "Block device characteristics",
    0xB2: "Logical block provisioning",
}


def vpd_payload(data: bytes, page: int) -> bytes:
    """The page's bytes after the 4-byte header; a :class:`ScsiDataError` (a ValueError) if it
    is another page or shorter than its header."""
    hdr = VPD_HEADER.decode(data)
    if len(data) < 4:
        raise ScsiDataError(f"VPD page {page:#04x}: {len(data)} bytes, shorter than the 4-byte "
                            "page header")
    if hdr.num("page_code") != page:
        raise ScsiDataError(f"expected VPD page {page:#04x}, got "
                            f"{hdr.num('page_code'):#04x} ({len(data)} bytes)")
    return bytes(data[4:4 + hdr.num("page_length")])


def encode_vpd(page: int, payload: bytes, pdt: int = 0) -> bytes:
    return VPD_HEADER.encode(peripheral_device_type=pdt, page_code=page,
                             page_length=len(payload)) + payload


def decode_vpd_00(data: bytes) -> list[int]:
    return list(vpd_payload(data, 0x00))


def encode_vpd_00(pages: Sequence[int], pdt: int = 0) -> bytes:
    return encode_vpd(0x00, bytes(pages), pdt)


def decode_vpd_80(data: bytes) -> str:
    return vpd_payload(data, 0x80).decode("ascii", errors="replace").strip(" \x00")


def encode_vpd_80(serial: str, pdt: int = 0) -> bytes:
    return encode_vpd(0x80, serial.encode("ascii"), pdt)


DESIGNATOR = Layout("vpd83.designator", 4, [
    u("protocol_identifier", 0, 4, 4), u("code_set", 0, 4), flag("piv", 1, 7),
    u("association", 1, 2, 4), u("designator_type", 1, 4), u("designator_length", 3, 8),
])

DESIGNATOR_TYPES = {0: "vendor specific", 1: "T10 vendor identification", 2: "EUI-64 based",
                    3: "NAA", 4: "Relative target port", 5: "Target port group",
                    6: "Logical unit group", 7: "MD5 logical unit identifier",
                    8: "SCSI name string", 9: "Protocol specific port identifier",
                    10: "UUID identifier"}
ASSOCIATIONS = {0: "Addressed logical unit", 1: "Target port", 2: "Target device that "
                "contains addressed lu", 3: "reserved"}
CODE_SETS = {1: "binary", 2: "ASCII", 3: "UTF-8"}


def decode_vpd_83(data: bytes) -> list[dict[str, Any]]:
    """Designation descriptors: header fields plus ``designator`` (bytes)."""
    payload = vpd_payload(data, 0x83)
    out: list[dict[str, Any]] = []
    pos = 0
    while pos + 4 <= len(payload):
        d = DESIGNATOR.decode(payload[pos:pos + 4]).as_dict()
        length = int(d["designator_length"])
        d["designator"] = payload[pos + 4:pos + 4 + length]
        out.append(d)
        pos += 4 + length
    return out


def encode_vpd_83(descriptors: Sequence[dict[str, Any]], pdt: int = 0) -> bytes:
    body = b""
    for d in descriptors:
        designator: bytes = d["designator"]
        fields = {k: v for k, v in d.items() if k in DESIGNATOR.by_name}
        fields["designator_length"] = len(designator)
        body += DESIGNATOR.encode(fields) + designator
    return encode_vpd(0x83, body, pdt)


def designator_text(d: dict[str, Any]) -> str:
    """A designator as sg_vpd shows its value: ASCII as text, binary as 0x hex."""
    value: bytes = d["designator"]
    if d["code_set"] in (2, 3):
        return value.decode("utf-8", errors="replace").rstrip("\x00 ")
    return "0x" + value.hex()


# Block Limits (SBC-4 6.6.4), page length 0x3C.
VPD_B0 = Layout("vpd.b0", 64, [
    u("peripheral_qualifier", 0, 3, 5), u("peripheral_device_type", 0, 5),
    u("page_code", 1, 8), u("page_length", 2, 16),
    flag("wsnz", 4, 0), u("max_compare_and_write_length", 5, 8),
    u("optimal_transfer_length_granularity", 6, 16), u("max_transfer_length", 8, 32),
    u("optimal_transfer_length", 12, 32), u("max_prefetch_length", 16, 32),
    u("max_unmap_lba_count", 20, 32), u("max_unmap_block_descriptor_count", 24, 32),
    u("optimal_unmap_granularity", 28, 32), flag("ugavalid", 32, 7),
    u("unmap_granularity_alignment", 32, 31), u("max_write_same_length", 36, 64),
    u("max_atomic_transfer_length", 44, 32), u("atomic_alignment", 48, 32),
    u("atomic_transfer_length_granularity", 52, 32),
    u("max_atomic_transfer_length_with_atomic_boundary", 56, 32),
    u("max_atomic_boundary_size", 60, 32),
], const={"page_code": 0xB0})

# Block Device Characteristics (SBC-4 6.6.2).
VPD_B1 = Layout("vpd.b1", 64, [
    u("peripheral_qualifier", 0, 3, 5), u("peripheral_device_type", 0, 5),
    u("page_code", 1, 8), u("page_length", 2, 16),
    u("medium_rotation_rate", 4, 16), u("product_type", 6, 8), u("wabereq", 7, 2, 6),
    u("wacereq", 7, 2, 4), u("nominal_form_factor", 7, 4), u("zoned", 8, 2, 4),
    flag("bocs", 8, 2), flag("fuab", 8, 1), flag("vbuls", 8, 0),
], const={"page_code": 0xB1})

# Logical Block Provisioning (SBC-4 6.6.6), the first 8 bytes.
VPD_B2 = Layout("vpd.b2", 8, [
    u("peripheral_qualifier", 0, 3, 5), u("peripheral_device_type", 0, 5),
    u("page_code", 1, 8), u("page_length", 2, 16),
    u("threshold_exponent", 4, 8), flag("lbpu", 5, 7), flag("lbpws", 5, 6),
    flag("lbpws10", 5, 5), u("lbprz", 5, 3, 2), flag("anc_sup", 5, 1), flag("dp", 5, 0),
    u("minimum_percentage", 6, 5, 3), u("provisioning_type", 6, 3),
    u("threshold_percentage", 7, 8),
], const={"page_code": 0xB2})

VPD_LAYOUTS = {0xB0: VPD_B0, 0xB1: VPD_B1, 0xB2: VPD_B2}


def decode_vpd(page: int, data: bytes) -> Any:
    """Any supported page: 00 -> list of codes, 80 -> str, 83 -> descriptors, Bx -> Record."""
    if page == 0x00:
        return decode_vpd_00(data)
    if page == 0x80:
        return decode_vpd_80(data)
    if page == 0x83:
        return decode_vpd_83(data)
    layout = VPD_LAYOUTS.get(page)
    if layout is None:
        return vpd_payload(data, page)
    vpd_payload(data, page)  # checks the page code
    return layout.decode(data)


# --------------------------------------------------------------------------------------------
# READ CAPACITY
# --------------------------------------------------------------------------------------------

READ_CAPACITY_10_DATA = Layout("read_capacity_10.data", 8, [
    u("returned_lba", 0, 32), u("block_length", 4, 32)])
READ_CAPACITY_16_DATA = Layout("read_capacity_16.data", 32, [
    u("returned_lba", 0, 64), u("block_length", 8, 32), u("rc_basis", 12, 2, 4),
    u("p_type", 12, 3, 1), flag("prot_en", 12, 0), u("p_i_exponent", 13, 4, 4),
    u("lbppbe", 13, 4), flag("lbpme", 14, 7), flag("lbprz", 14, 6),
    u("lowest_aligned_lba", 14, 14),
])

# --------------------------------------------------------------------------------------------
# MODE SENSE
# --------------------------------------------------------------------------------------------

MODE_HEADER_6 = Layout("mode_sense_6.header", 4, [
    u("mode_data_length", 0, 8), u("medium_type", 1, 8), flag("wp", 2, 7),
    flag("dpofua", 2, 4), u("block_descriptor_length", 3, 8)])
MODE_HEADER_10 = Layout("mode_sense_10.header", 8, [
    u("mode_data_length", 0, 16), u("medium_type", 2, 8), flag("wp", 3, 7),
    flag("dpofua", 3, 4), flag("longlba", 4, 0), u("block_descriptor_length", 6, 16)])
SHORT_BLOCK_DESCRIPTOR = Layout("mode.block_descriptor", 8, [
    u("density_code", 0, 8), u("blocks", 1, 24), u("block_length", 5, 24)])
MODE_PAGE_HEADER = Layout("mode.page_header", 2, [
    flag("ps", 0, 7), flag("spf", 0, 6), u("page_code", 0, 6), u("page_length", 1, 8)])
#: The Caching mode page (SBC-4 6.5.5, page 08h, page length 12h); obsolete bytes 17-19 are
#: left out. ``rig.scsi.mode_pages`` finds it in MODE SENSE data and builds MODE SELECT's.
CACHING_PAGE = Layout("mode.caching", 20, [
    flag("ps", 0, 7), flag("spf", 0, 6), u("page_code", 0, 6), u("page_length", 1, 8),
    flag("ic", 2, 7), flag("abpf", 2, 6), flag("cap", 2, 5), flag("disc", 2, 4),
    flag("size", 2, 3), flag("wce", 2, 2), flag("mf", 2, 1), flag("rcd", 2, 0),
    u("demand_read_retention_priority", 3, 4, 4), u("write_retention_priority", 3, 4),
    u("disable_prefetch_transfer_length", 4, 16), u("minimum_prefetch", 6, 16),
    u("maximum_prefetch", 8, 16), u("maximum_prefetch_ceiling", 10, 16),
    flag("fsw", 12, 7), flag("lbcss", 12, 6), flag("dra", 12, 5), u("sync_prog", 12, 2, 1),
    flag("nv_dis", 12, 0), u("number_of_cache_segments", 13, 8),
    u("cache_segment_size", 14, 16),
], const={"page_code": 0x08})


def decode_mode_sense(data: bytes, *, ten: bool) -> dict[str, Any]:
    """Header, block descriptors and pages (``code``, ``subpage``, ``data``; the caching
    page also decoded)."""
    header_layout = MODE_HEADER_10 if ten else MODE_HEADER_6
    hdr = header_layout.decode(data)
    total = hdr.num("mode_data_length") + (2 if ten else 1)
    data = data[:total]
    pos = header_layout.size
    bd_len = hdr.num("block_descriptor_length")
    # only the descriptors the data holds (a garbage length of 65535 is not 8191 of them)
    descriptors = [SHORT_BLOCK_DESCRIPTOR.decode(data[p:p + 8]).as_dict()
                   for p in range(pos, min(len(data), pos + bd_len) - 7, 8)]
    pos += bd_len
    pages: list[dict[str, Any]] = []
    while pos + 2 <= len(data):
        ph = MODE_PAGE_HEADER.decode(data[pos:pos + 2])
        if ph.num("spf"):
            if pos + 4 > len(data):
                break
            subpage = data[pos + 1]
            length = int.from_bytes(data[pos + 2:pos + 4], "big")
            body = data[pos:pos + 4 + length]
            pos += 4 + length
        else:
            subpage = 0
            length = ph.num("page_length")
            body = data[pos:pos + 2 + length]
            pos += 2 + length
        page: dict[str, Any] = {"code": ph.num("page_code"), "subpage": subpage,
                                "data": bytes(body)}
        if page["code"] == 0x08 and not subpage:
            page["caching"] = CACHING_PAGE.decode(body).as_dict()
        pages.append(page)
    return {"header": hdr.as_dict(), "block_descriptors": descriptors, "pages": pages}


def encode_mode_sense(header: dict[str, Any], descriptors: Sequence[dict[str, Any]],
                      pages: Sequence[bytes], *, ten: bool) -> bytes:
    layout = MODE_HEADER_10 if ten else MODE_HEADER_6
    body = b"".join(SHORT_BLOCK_DESCRIPTOR.encode(d) for d in descriptors) + b"".join(pages)
    h = {k: v for k, v in header.items() if k in layout.by_name}
    h["block_descriptor_length"] = 8 * len(descriptors)
    h["mode_data_length"] = layout.size + len(body) - (2 if ten else 1)
    return layout.encode(h) + body


# --------------------------------------------------------------------------------------------
# GET EVENT STATUS NOTIFICATION, READ TOC, REPORT LUNS
# --------------------------------------------------------------------------------------------

GESN_HEADER = Layout("gesn.header", 4, [
    u("event_data_length", 0, 16), flag("nea", 2, 7), u("notification_class", 2, 3),
    u("supported_event_classes", 3, 8)])
GESN_MEDIA_EVENT = Layout("gesn.media", 4, [
    u("media_event_code", 0, 4), flag("media_present", 1, 1), flag("door_open", 1, 0),
    u("start_slot", 2, 8), u("end_slot", 3, 8)])
MEDIA_EVENTS = {0: "no change", 1: "eject request", 2: "new media", 3: "media removal",
                4: "media changed", 5: "bg format completed", 6: "bg format restarted"}


def decode_gesn(data: bytes) -> dict[str, Any]:
    hdr = GESN_HEADER.decode(data)
    out: dict[str, Any] = {"header": hdr.as_dict()}
    if not hdr.num("nea") and hdr.num("notification_class") == 4 and len(data) >= 8:
        out["media"] = GESN_MEDIA_EVENT.decode(data[4:8]).as_dict()
    return out


def encode_gesn(header: dict[str, Any], media: dict[str, Any] | None = None) -> bytes:
    body = GESN_MEDIA_EVENT.encode(media) if media is not None else b""
    h = dict(header)
    h["event_data_length"] = 2 + len(body)
    return GESN_HEADER.encode(h) + body


TOC_HEADER = Layout("toc.header", 4, [
    u("data_length", 0, 16), u("first_track", 2, 8), u("last_track", 3, 8)])
TOC_TRACK = Layout("toc.track", 8, [
    u("adr", 1, 4, 4), u("control", 1, 4), u("track", 2, 8), u("start_address", 4, 32)])


def decode_toc(data: bytes) -> dict[str, Any]:
    hdr = TOC_HEADER.decode(data)
    end = min(len(data), 2 + hdr.num("data_length"))
    tracks = [TOC_TRACK.decode(data[p:p + 8]).as_dict() for p in range(4, end - 7, 8)]
    return {"header": hdr.as_dict(), "tracks": tracks}


def encode_toc(first: int, last: int, tracks: Sequence[dict[str, Any]]) -> bytes:
    body = b"".join(TOC_TRACK.encode(t) for t in tracks)
    return TOC_HEADER.encode(data_length=2 + len(body), first_track=first,
                             last_track=last) + body


REPORT_LUNS_HEADER = Layout("report_luns.header", 8, [u("lun_list_length", 0, 32)])


def decode_report_luns(data: bytes) -> list[int]:
    """LUNs as 8-byte big-endian integers (the single-level form has the LUN in bytes 0-1)."""
    n = REPORT_LUNS_HEADER.decode(data).num("lun_list_length")
    body = data[8:8 + n]
    return [int.from_bytes(body[p:p + 8], "big") for p in range(0, len(body) - 7, 8)]


def encode_report_luns(luns: Sequence[int]) -> bytes:
    body = b"".join(lun.to_bytes(8, "big") for lun in luns)
    return REPORT_LUNS_HEADER.encode(lun_list_length=len(body)) + body


# --------------------------------------------------------------------------------------------
# UNMAP parameter list (SBC-4 5.31.2)
# --------------------------------------------------------------------------------------------

UNMAP_HEADER = Layout("unmap.header", 8, [
    u("data_length", 0, 16), u("block_descriptor_data_length", 2, 16)])
UNMAP_DESCRIPTOR = Layout("unmap.descriptor", 16, [u("lba", 0, 64), u("blocks", 8, 32)])


def encode_unmap_parameters(ranges: Sequence[tuple[int, int]]) -> bytes:
    body = b"".join(UNMAP_DESCRIPTOR.encode(lba=lba, blocks=n) for lba, n in ranges)
    return UNMAP_HEADER.encode(data_length=6 + len(body),
                               block_descriptor_data_length=len(body)) + body


def decode_unmap_parameters(data: bytes) -> list[tuple[int, int]]:
    hdr = UNMAP_HEADER.decode(data)
    body = data[8:8 + hdr.num("block_descriptor_data_length")]
    out = []
    for p in range(0, len(body) - 15, 16):
        d = UNMAP_DESCRIPTOR.decode(body[p:p + 16])
        out.append((d.num("lba"), d.num("blocks")))
    return out

